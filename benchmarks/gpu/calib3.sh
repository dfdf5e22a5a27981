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
wc_start 8201 llama-3.1-8b llama --no-enable-prefix-caching
wc_start 8202 qwen3-8b qwen ""
wc_start 8203 qwen3-8b qwen-nocache --no-enable-prefix-caching
[ -n "${STARTONLY:-}" ] && exit 0
for port in 8201 8202 8203; do
    for _ in $(seq 1 400); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
done
echo "servers ready after $SECONDS s" > "$OUT/calib3.txt"
grep -h "max_num_batched_tokens\|GPU KV cache size\|cudagraph\|CUDA graph\|compile" /tmp/wc/*.log | cut -c1-260 | head -12 >> "$OUT/calib3.txt"

lg() { wc_point "$OUT/calib3.txt" "$@"; }
L=llama-3.1-8b Q=qwen3-8b
wc_warm "$OUT/calib3.txt" 8201 $L; wc_warm "$OUT/calib3.txt" 8202 $Q; wc_warm "$OUT/calib3.txt" 8203 $Q
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
