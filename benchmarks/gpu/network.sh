#!/usr/bin/env bash
# Issue 28: wait for the four servers of servers.sh, measure each alone (the sim's matching profiles,
# $OUT/probe.json), then the three policies on them (benchmarks/gpu-skewed.toml, $OUT/net.json).
set -uo pipefail
source benchmarks/gpu/env.sh
for port in 8101 8102 8103 8104; do
    for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
    curl -sf "http://127.0.0.1:$port/health" >/dev/null || { echo "server $port not ready"; tail -5 /tmp/ws/*.log; }
done
echo "servers ready at $(date +%T)" >> "$OUT/servers.txt"
grep -h "GPU KV cache size\|Maximum concurrency" /tmp/ws/*.log | cut -c1-200 >> "$OUT/servers.txt"
[ -n "${SKIP_PROBE:-}" ] || python3 benchmarks/gpu/probe.py --model llama-3.1-8b http://127.0.0.1:810{1,2,3,4} > "$OUT/probe.json" 2>/tmp/ws/probe.err
python3 -m wwwserve bench benchmarks/gpu-skewed.toml --policies "${POLICIES:-isolated,wwwserve,centralized}" --json \
    --out /tmp/ws/bench > "$OUT/net.json" 2> /tmp/ws/bench.err || tail -20 /tmp/ws/bench.err
cp /tmp/ws/bench/requests.csv "$OUT/" 2>/dev/null  # every request of every policy: where TTFT and TPOT went
{ echo "after the bench:"; for port in 8101 8102 8103 8104; do echo "$port health: $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$port/health)"; done
  for f in /tmp/ws/*.log; do echo "== $f"; grep -E "ERROR|Error|error" "$f" | grep -v ulimit | tail -5 | cut -c1-300; done
  # what the providers' agents said of the failures (code and message, counted per provider and policy)
  echo "request errors by agent log:"; grep -rh '"request.error"' /tmp/ws/bench/logs 2>/dev/null \
      | python3 -c "import collections, json, sys; c = collections.Counter((d.get('provider'), d.get('code'), str(d.get('message'))[:160]) for d in map(json.loads, sys.stdin)); [print(n, *k) for k, n in c.most_common(12)]"
} >> "$OUT/servers.txt"
