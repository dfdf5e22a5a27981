#!/usr/bin/env bash
# Four vLLM servers (Llama-3.1-8B shape, dummy weights) on the one GPU, unequal like separate GPUs: each its own
# KV-cache size (--kv-cache-memory-bytes, which also lets them start together), batch limit (--max-num-seqs)
# and, where CUDA MPS starts, its share of the multiprocessors (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE). They run on
# (setsid) after this script; $OUT/servers.txt says what was possible. Prefix caching is off: the benchmark's
# prompts are words the word-level tokenizer does not know, so every prompt would look alike to the cache.
set -uo pipefail
source benchmarks/gpu/env.sh
mkdir -p /tmp/ws
MPS=0
if command -v nvidia-cuda-mps-control >/dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/ws/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/ws/mps-log
    mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
    if nvidia-cuda-mps-control -d && CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=10 timeout 60 python3 -c \
        "import torch; x = torch.ones(4096, 4096, device='cuda'); print(float((x @ x).sum()))" > /tmp/ws/mps-check.txt 2>&1; then
        MPS=1
    else
        echo quit | nvidia-cuda-mps-control; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    fi
fi
echo "mps=$MPS $(cat /tmp/ws/mps-check.txt 2>/dev/null | tail -1)" > "$OUT/servers.txt"
echo $MPS > /tmp/ws/mps
# name port sm% max-num-seqs kv-GiB
SERVERS="big 8101 50 128 16
mid 8102 25 64 8
small 8103 15 32 4
tiny 8104 10 16 4"
while read -r name port sm seqs kv; do
    pct=""; [ "$MPS" = 1 ] && pct="CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=$sm"
    env $pct setsid python3 -m vllm.entrypoints.cli.main serve /root/models/llama-3.1-8b --served-model-name llama-3.1-8b \
        --load-format dummy --port "$port" --max-num-seqs "$seqs" --kv-cache-memory-bytes $((kv * 1024 * 1024 * 1024)) \
        --gpu-memory-utilization 0.12 --no-enable-prefix-caching > "/tmp/ws/$name.log" 2>&1 < /dev/null &
    echo "$name port=$port sm=$sm% max_num_seqs=$seqs kv=${kv}GiB pid=$!" >> "$OUT/servers.txt"
    sleep 5
done <<< "$SERVERS"
