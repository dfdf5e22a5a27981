#!/usr/bin/env bash
# Issue 26's second pass: the calibration points that missed by more than 15%, re-measured on warm servers
# with more requests ($OUT/points.jsonl). The Llama-3.1-8B shape (prefix caching off, as in
# ../shared/calibration/h200-vllm-0.22.md) and the Qwen3-8B shape (vLLM's defaults) run side by side on the
# whole GPU, each with a fixed KV cache (so they can start together), and are measured one at a time: an idle
# server takes no multiprocessors. At 128 streams the load comes from four `vllm bench serve` processes of 32
# streams each (one asyncio client cannot parse the ~16,000 events/s; its TTFT clock ran behind).
set -uo pipefail
source benchmarks/gpu/env.sh
BUDGET_S=${BUDGET_S:-450}  # a point starts only before this many seconds of the script (a run has 600)
mkdir -p /tmp/wq/res /tmp/wc
common="--load-format dummy --kv-cache-memory-bytes $((32 * 1024 * 1024 * 1024)) --gpu-memory-utilization 0.45"
curl -sf http://127.0.0.1:8202/health >/dev/null || {  # (already up from an earlier run on this machine)
setsid python3 -m vllm.entrypoints.cli.main serve /root/models/llama-3.1-8b \
    --port 8201 --no-enable-prefix-caching $common > /tmp/wc/llama.log 2>&1 < /dev/null &
sleep 5
setsid python3 -m vllm.entrypoints.cli.main serve /root/models/qwen3-8b \
    --port 8202 $common > /tmp/wc/qwen.log 2>&1 < /dev/null &
}
for port in 8201 8202; do
    for _ in $(seq 1 400); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
    # the first request of a fresh server is cold (~1 s): not a point's
    curl -s "http://127.0.0.1:$port/v1/completions" -H 'content-type: application/json' \
        -d "{\"model\": \"/root/models/$([ $port = 8201 ] && echo llama-3.1-8b || echo qwen3-8b)\", \"prompt\": \"w5 w6 w7\", \"max_tokens\": 8}" > /dev/null
done
echo "servers ready after $SECONDS s" > "$OUT/calib.txt"
grep -h "max_num_batched_tokens\|KV cache size\|Maximum concurrency" /tmp/wc/*.log | cut -c1-300 | head -6 >> "$OUT/calib.txt"

parallel_bench() {  # name in out streams-per-process prompts-per-process processes: one point from several clients
    local name=$1 i=$2 o=$3 c=$4 n=$5 k=$6
    if [ "$SECONDS" -gt "$BUDGET_S" ]; then echo "{\"point\": \"$name\", \"skipped\": \"run time\"}" >> "$OUT/points.jsonl"; return; fi
    local pids=()
    for j in $(seq 1 "$k"); do
        python3 -m vllm.entrypoints.cli.main bench serve --backend vllm --base-url "$BENCH_URL" --model "$BENCH_MODEL" \
            --dataset-name random --random-input-len "$i" --random-output-len "$o" --num-prompts "$n" \
            --max-concurrency "$c" --ignore-eos --seed $((RANDOM + 1000 * j)) --percentile-metrics ttft,tpot,e2el \
            --save-result --result-dir /tmp/wq/res --result-filename "$name-$j.json" > "/tmp/wq/bench-$name-$j.log" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"  # not a bare wait: the servers are this shell's children too
    python3 - "$name" "$i" "$o" "$c" "$n" "$k" <<'PY' >> "$OUT/points.jsonl"
import json, sys
name, i, o, c, n, k = sys.argv[1:]
rs = []
for j in range(1, int(k) + 1):
    try:
        rs.append(json.load(open(f"/tmp/wq/res/{name}-{j}.json")))
    except OSError:
        pass
done = sum(r["completed"] for r in rs) or 1
mean = lambda key: sum(r[key] * r["completed"] for r in rs) / done
print(json.dumps({"point": name, "input": int(i), "output": int(o), "concurrency": int(c) * int(k),
                  "prompts": int(n) * int(k), "processes": len(rs), "completed": done,
                  "duration": max(r["duration"] for r in rs), "mean_ttft_ms": mean("mean_ttft_ms"),
                  "median_ttft_ms_of_processes": [r["median_ttft_ms"] for r in rs],
                  "mean_tpot_ms": mean("mean_tpot_ms"), "output_throughput": sum(r["output_throughput"] for r in rs)}))
PY
}

export BENCH_URL=http://127.0.0.1:8201 BENCH_MODEL=/root/models/llama-3.1-8b
parallel_bench l-128-256-c128 128 256 32 64 4
vllm_bench l-1024-128-c1 1024 128 1 32
vllm_bench l-1024-128-c8 1024 128 8 96
export BENCH_URL=http://127.0.0.1:8202 BENCH_MODEL=/root/models/qwen3-8b
parallel_bench q-128-256-c128 128 256 32 64 4
vllm_bench q-prefix-c16 256 64 16 64 --random-prefix-len 1024
vllm_bench q-1024-128-c1 1024 128 1 32
vllm_bench q-prefix-c16-b 256 64 16 64 --random-prefix-len 1024
vllm_bench q-prefix-c1 256 64 1 16 --random-prefix-len 1024
export BENCH_URL=http://127.0.0.1:8201 BENCH_MODEL=/root/models/llama-3.1-8b
vllm_bench l-128-256-c128-one 128 256 128 256
echo "points done after $SECONDS s" >> "$OUT/calib.txt"
pkill -f "vllm.entrypoints.cli.main serve" ; sleep 8; pkill -9 -f "EngineCore|vllm.entrypoints" ; true
