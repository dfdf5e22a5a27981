#!/usr/bin/env bash
# Issue 28's overhead: a hub and one provider (--engine openai) in front of the server on port ${PORT:-8101};
# the same prompts straight to vLLM, through the provider's leaf and through the hub ($OUT/overhead.json).
set -uo pipefail
source benchmarks/gpu/env.sh
mkdir -p /tmp/wo
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:${PORT:-8101}/health" >/dev/null && break; sleep 1; done
python3 -m wwwserve hub --port 4622 --leafnode-port 7622 --http-port 8622 --data-dir /tmp/wo/hub > /tmp/wo/hub.log 2>&1 &
sleep 2
python3 -m wwwserve provider --name front --hub 127.0.0.1:7622 --port 4701 --engine openai \
    --engine-url "http://127.0.0.1:${PORT:-8101}" --model llama-3.1-8b --max-concurrency 256 --max-queue 1024 \
    --data-dir /tmp/wo/p > /tmp/wo/provider.log 2>&1 &
sleep 6
python3 benchmarks/gpu/overhead.py --server "http://127.0.0.1:${PORT:-8101}" --model llama-3.1-8b \
    --leaf nats://127.0.0.1:4701 --hub nats://127.0.0.1:4622 --concurrency 8,32 --rounds "${ROUNDS:-3}" \
    > "$OUT/overhead.json" 2> /tmp/wo/overhead.err || tail -20 /tmp/wo/overhead.err
