#!/usr/bin/env bash
# Issue 27 on the GPU, then issue 26's own points: `wwwserve provider --engine vllm` supervises vLLM serving the
# Qwen3-8B shape behind a hub; its heartbeats and answers through the hub are recorded ($OUT/provider.json);
# vLLM's own benchmark client then measures calibration points straight at the supervised server
# ($OUT/points.jsonl); the provider is stopped and what is left of vLLM is listed ($OUT/stop.txt).
set -uo pipefail
source benchmarks/gpu/env.sh
BUDGET_S=${BUDGET_S:-430}  # calibration points start only before this many seconds of the script (a run has 600)
mkdir -p /tmp/wq/res
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv > "$OUT/gpu.txt"
python3 -m wwwserve hub --port 4222 --leafnode-port 7422 --http-port 8222 --data-dir /tmp/wq/hub > /tmp/wq/hub.log 2>&1 &
sleep 2
T0=$(date +%s)
python3 -m wwwserve --log-level info provider --name gpu-qwen --hub 127.0.0.1:7422 --port 4301 --engine vllm \
    --model /root/models/qwen3-8b --engine-opt load-format=dummy --engine-opt port=8200 \
    --max-concurrency 256 --max-queue 1024 --data-dir /tmp/wq/p > /tmp/wq/provider.log 2>&1 &
PROV=$!
python3 benchmarks/gpu/provider_check.py nats://127.0.0.1:4222 gpu-qwen /root/models/qwen3-8b 420 > "$OUT/provider.json"
echo "provider ready + answered after $(( $(date +%s) - T0 )) s" >> "$OUT/stop.txt"
export BENCH_URL=http://127.0.0.1:8200 BENCH_MODEL=/root/models/qwen3-8b
vllm_bench q-1024-128-c1 1024 128 1 8
vllm_bench q-1024-128-c8 1024 128 8 24
vllm_bench q-1024-128-c32 1024 128 32 96
vllm_bench q-2000-1-burst64 2000 1 64 64
vllm_bench q-128-256-c128 128 256 128 256
vllm_bench q-mixed-c16 1024 256 16 64 --random-range-ratio 0.9
vllm_bench q-512-1024-c16 512 1024 16 32
vllm_bench q-prefix-c16 256 64 16 64 --random-prefix-len 1024
grep -h "max_num_batched_tokens\|max_num_seqs\|cudagraph_capture_sizes\|KV cache size\|Maximum concurrency" /tmp/wq/provider.log | cut -c1-400 | head -8 > "$OUT/vllm-config.txt"
kill -TERM $PROV; wait $PROV; echo "provider exit code $?" >> "$OUT/stop.txt"
sleep 3
{ echo "vllm processes left after the provider stopped:"; pgrep -af "vllm|EngineCore" || echo none; } >> "$OUT/stop.txt"
grep -h "server.state\|server.spawned\|agent.ready\|agent.stopped" /tmp/wq/provider.log | cut -c1-300 >> "$OUT/stop.txt"
