#!/usr/bin/env bash
# Issue 26's third pass: where the last gaps come from. Three servers side by side on the whole GPU, each
# measured alone with benchmarks/gpu/loadgen.py (client TTFT split by the server's own histograms):
#   8201 Llama-3.1-8B shape, prefix caching off; 8202 Qwen3-8B shape, on (vLLM's default); 8203 Qwen3-8B
#   shape, off. So Qwen3's C=1 TTFT (50 ms vs Llama's 34) is put down to the shape or to prefix caching.
# Points: prefill time vs prompt length at C=1 (each server); 1,024/128 at C=1 (as the calibration point);
# 128/256 at C=128 from four processes that start together (the single vllm-bench client was CPU-bound);
# the Qwen3 shared-prefix points at C=16 and C=1; 1,024/128 at C=8 on Llama. $OUT/points.jsonl.
set -uo pipefail
source benchmarks/gpu/env.sh
BUDGET_S=${BUDGET_S:-480}
mkdir -p /tmp/wc
common="--load-format dummy --kv-cache-memory-bytes $((10 * 1024 * 1024 * 1024)) --gpu-memory-utilization 0.25"
start() {  # port model name extra
    [ -e "/tmp/wc/$3.pid" ] && return  # (started by an earlier run on this machine: STARTONLY=1)
    setsid python3 -m vllm.entrypoints.cli.main serve "/root/models/$2" --port "$1" $common $4 \
        > "/tmp/wc/$3.log" 2>&1 < /dev/null &
    echo $! > "/tmp/wc/$3.pid"
    sleep 4
}
start 8201 llama-3.1-8b llama --no-enable-prefix-caching
start 8202 qwen3-8b qwen ""
start 8203 qwen3-8b qwen-nocache --no-enable-prefix-caching
[ -n "${STARTONLY:-}" ] && exit 0
for port in 8201 8202 8203; do
    for _ in $(seq 1 400); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
done
echo "servers ready after $SECONDS s" > "$OUT/calib3.txt"
grep -h "max_num_batched_tokens\|GPU KV cache size\|cudagraph\|CUDA graph\|compile" /tmp/wc/*.log | cut -c1-260 | head -12 >> "$OUT/calib3.txt"

lg() {  # port model name [loadgen flags]: one point, a line in points.jsonl
    local port=$1 model=$2 name=$3; shift 3
    if [ "$SECONDS" -gt "$BUDGET_S" ]; then echo "{\"point\": \"$name\", \"skipped\": \"run time\"}" >> "$OUT/points.jsonl"; return; fi
    python3 benchmarks/gpu/loadgen.py --url "http://127.0.0.1:$port" --model "/root/models/$model" --name "$name" "$@" \
        >> "$OUT/points.jsonl" 2>> "$OUT/calib3.txt"
}
L=llama-3.1-8b Q=qwen3-8b
for port_model_name in "8201 $L l" "8202 $Q q" "8203 $Q qn"; do  # warm-up: the first requests are cold
    set -- $port_model_name
    python3 benchmarks/gpu/loadgen.py --url "http://127.0.0.1:$1" --model "/root/models/$2" --input 1024 --output 16 \
        --concurrency 4 --prompts 8 > /dev/null 2>> "$OUT/calib3.txt"
done
lg 8201 $L l-1024-128-c1 --input 1024 --output 128 --concurrency 1 --prompts 16
lg 8202 $Q q-1024-128-c1 --input 1024 --output 128 --concurrency 1 --prompts 16
lg 8203 $Q qn-1024-128-c1 --input 1024 --output 128 --concurrency 1 --prompts 16
lg 8201 $L l-sweep --sweep 128,512,1024,2048,4096,8192 --output 2 --prompts 12
lg 8202 $Q q-sweep --sweep 128,512,1024,2048,4096,8192 --output 2 --prompts 12
lg 8203 $Q qn-sweep --sweep 128,512,1024,2048,4096,8192 --output 2 --prompts 12
lg 8201 $L l-128-256-c128 --input 128 --output 256 --concurrency 128 --prompts 256 --processes 4
lg 8202 $Q q-128-256-c128 --input 128 --output 256 --concurrency 128 --prompts 256 --processes 4
lg 8202 $Q q-prefix-c16 --input 256 --output 64 --concurrency 16 --prompts 64 --prefix-len 1024
lg 8202 $Q q-prefix-c1 --input 256 --output 64 --concurrency 1 --prompts 16 --prefix-len 1024 --seed 1
lg 8203 $Q qn-prefix-c16 --input 256 --output 64 --concurrency 16 --prompts 64 --prefix-len 1024 --seed 2
lg 8201 $L l-1024-128-c8 --input 1024 --output 128 --concurrency 8 --prompts 96
lg 8201 $L l-128-256-c128-one --input 128 --output 256 --concurrency 128 --prompts 256 --processes 1
echo "points done after $SECONDS s" >> "$OUT/calib3.txt"
pkill -f "[v]llm.entrypoints.cli.main serve" ; sleep 8; pkill -9 -f "[E]ngineCore|[v]llm.entrypoints" ; true
