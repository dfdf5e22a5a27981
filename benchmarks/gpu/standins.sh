#!/usr/bin/env bash
# Four vLLM stand-ins for benchmarks/gpu-skewed-standin.toml, on the CPU: each with the step costs its vLLM
# server showed alone on the H200 (run 6's probe: step at batch 1 = step-ms + per-seq-ms, prefill tokens/s,
# batch limit). They run on (setsid) until killed: pkill -f "[s]tandin.py".
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# name port step-ms per-seq-ms prefill-tps max-num-seqs
while read -r name port step seq tps seqs; do
    setsid python3 "$HERE/standin.py" --port "$port" --step-ms "$step" --per-seq-ms "$seq" --prefill-tps "$tps" \
        --max-num-seqs "$seqs" > "/tmp/standin-$name.log" 2>&1 < /dev/null &
done <<EOF2
tiny 8304 10.310 1.462 4976 16
small 8303 10.678 0.752 7595 32
mid 8302 6.180 0.439 13352 64
big 8301 5.538 0.243 25928 128
EOF2
for port in 8301 8302 8303 8304; do
    for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
done
