#!/usr/bin/env bash
# Four vLLM stand-ins for benchmarks/gpu-skewed-standin.toml, on the CPU: each provider's port from that
# scenario's `url`, its speeds from the sim twin benchmarks/gpu-skewed-sim.toml (what each vLLM server showed
# alone on the H200: step at batch 1, its growth per sequence, prefill tokens/s, batch limit), so the measured
# speeds live in one file. They run on (setsid) until killed: pkill -f "[s]tandin.py".
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
python3 - "$HERE/../gpu-skewed-sim.toml" "$HERE/../gpu-skewed-standin.toml" <<'PY' |
import sys, tomllib
from urllib.parse import urlsplit
speeds = {p["name"]: p for p in tomllib.load(open(sys.argv[1], "rb"))["providers"]}
for p in tomllib.load(open(sys.argv[2], "rb"))["providers"]:
    s = speeds[p["name"]]
    step, slowdown = s["decode_tpot_ms"], s["batch_slowdown"]  # the sim's step: step x (1 + slowdown x (n - 1))
    print(p["name"], urlsplit(p["url"]).port, f"{step * (1 - slowdown):.3f}", f"{step * slowdown:.3f}",
          s["prefill_tps"], s["max_concurrency"])
PY
while read -r name port step seq tps seqs; do
    setsid python3 "$HERE/standin.py" --port "$port" --step-ms "$step" --per-seq-ms "$seq" --prefill-tps "$tps" \
        --max-num-seqs "$seqs" > "/tmp/standin-$name.log" 2>&1 < /dev/null &
    echo "$name port=$port step=${step}ms+${seq}ms/seq prefill=${tps}tok/s seqs=$seqs"
done
for port in $(grep -o '127.0.0.1:[0-9]*' "$HERE/../gpu-skewed-standin.toml" | cut -d: -f2); do
    for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
done
