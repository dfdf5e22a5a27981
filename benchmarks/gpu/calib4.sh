#!/usr/bin/env bash
# Issue 26's fourth pass: points the sim did not see when its 0.22 model was fitted (async scheduling, a
# per-request admission cost), measured after the sim's predictions for them were committed
# (docs/gpu-runs/run19-holdout/predicted.json, from `python benchmarks/gpu/holdout.py`), and a fine
# prompt-length sweep around 1,024 tokens at C=1 (Qwen3's slow 1,024-token prefill in run 16).
# Two servers side by side on the whole GPU, prefix caching off, each measured alone with
# benchmarks/gpu/loadgen.py: 8201 Llama-3.1-8B shape, 8203 Qwen3-8B shape. $OUT/points.jsonl.
#   STARTONLY=1 bash benchmarks/gpu/calib4.sh   # starts the servers and returns
#   BUDGET_S=470 bash benchmarks/gpu/calib4.sh  # waits for them, measures, stops them
set -uo pipefail
source benchmarks/gpu/env.sh
BUDGET_S=${BUDGET_S:-480}
wc_start 8201 llama-3.1-8b llama --no-enable-prefix-caching
wc_start 8203 qwen3-8b qwen-nocache --no-enable-prefix-caching
[ -n "${STARTONLY:-}" ] && exit 0
for port in 8201 8203; do
    for _ in $(seq 1 400); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
done
echo "servers ready after $SECONDS s" > "$OUT/calib4.txt"
grep -h "max_num_batched_tokens\|GPU KV cache size\|async\|cudagraph_capture_sizes" /tmp/wc/*.log | cut -c1-260 | head -12 >> "$OUT/calib4.txt"

lg() { wc_point "$OUT/calib4.txt" "$@"; }
L=llama-3.1-8b Q=qwen3-8b
wc_warm "$OUT/calib4.txt" 8201 $L; wc_warm "$OUT/calib4.txt" 8203 $Q
FINE=768,896,960,1024,1088,1152,1280,1536
lg 8203 $Q qn-fine --sweep $FINE --output 2 --prompts 12
lg 8201 $L l-fine --sweep $FINE --output 2 --prompts 12
# held-out points (python benchmarks/gpu/holdout.py prints the sim's predictions for each)
lg 8201 $L l-128-256-c64 --input 128 --output 256 --concurrency 64 --prompts 192
lg 8201 $L l-1024-128-c16 --input 1024 --output 128 --concurrency 16 --prompts 64
lg 8201 $L l-4096-256-c8 --input 4096 --output 256 --concurrency 8 --prompts 32
lg 8201 $L l-512-512-c32 --input 512 --output 512 --concurrency 32 --prompts 64
lg 8203 $Q qn-2048-128-c16 --input 2048 --output 128 --concurrency 16 --prompts 64
lg 8203 $Q qn-128-256-c64 --input 128 --output 256 --concurrency 64 --prompts 192
lg 8203 $Q qn-256-1024-c48 --input 256 --output 1024 --concurrency 48 --prompts 48
lg 8203 $Q qn-1024-128-c1 --input 1024 --output 128 --concurrency 1 --prompts 24
# the C=128 wave again, one process as `vllm bench serve` sends it
lg 8201 $L l-128-256-c128-one --input 128 --output 256 --concurrency 128 --prompts 256 --processes 1
lg 8203 $Q qn-128-256-c128-one --input 128 --output 256 --concurrency 128 --prompts 256 --processes 1
echo "points done after $SECONDS s" >> "$OUT/calib4.txt"
pkill -f "[v]llm.entrypoints.cli.main serve" ; sleep 8; pkill -9 -f "[E]ngineCore|[v]llm.entrypoints" ; true
