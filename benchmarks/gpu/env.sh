# Sourced by the GPU scripts (run from the project root on the lent GPU machine, after the recipe in
# ../shared/gpu/README.md installed vLLM into /root/site): vLLM from there, wwwserve from this checkout.
export PYTHONPATH=$PWD:/root/site PATH=/root/site/bin:$PATH
export VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
export OUT=${OUT:-/tmp/wwwserve-gpu-out}
mkdir -p "$OUT"
vllm_bench() {  # name in out tokens concurrency prompts [extra vllm bench flags]: one calibration point
    local name=$1 i=$2 o=$3 c=$4 n=$5; shift 5
    if [ "$SECONDS" -gt "${BUDGET_S:-100000}" ]; then echo "{\"point\": \"$name\", \"skipped\": \"run time\"}" >> "$OUT/points.jsonl"; return; fi
    python3 -m vllm.entrypoints.cli.main bench serve --backend vllm --base-url "$BENCH_URL" --model "$BENCH_MODEL" \
        --dataset-name random --random-input-len "$i" --random-output-len "$o" --num-prompts "$n" \
        --max-concurrency "$c" --ignore-eos --seed $((RANDOM + 1000)) --percentile-metrics ttft,tpot,e2el \
        --save-result --result-dir /tmp/wq/res --result-filename "$name.json" "$@" > "/tmp/wq/bench-$name.log" 2>&1 \
        || { echo "bench $name failed:"; tail -5 "/tmp/wq/bench-$name.log"; }
    python3 - "$name" "$i" "$o" "$c" "$n" "$*" <<'PY' >> "$OUT/points.jsonl"
import json, sys
name, i, o, c, n, extra = sys.argv[1:]
try:
    r = json.load(open(f"/tmp/wq/res/{name}.json"))
except OSError:
    r = {}
keep = ("completed", "duration", "mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "median_tpot_ms",
        "output_throughput", "total_input_tokens", "mean_e2el_ms")
print(json.dumps({"point": name, "input": int(i), "output": int(o), "concurrency": int(c), "prompts": int(n),
                  "extra": extra, **{k: r.get(k) for k in keep}}))
PY
}
# The calibration passes (calib3.sh, calib4.sh): vLLM servers side by side on the whole GPU, each with its own
# 10 GiB KV cache (which also lets them start together), measured alone with benchmarks/gpu/loadgen.py.
WC_FLAGS="--load-format dummy --kv-cache-memory-bytes $((10 * 1024 * 1024 * 1024)) --gpu-memory-utilization 0.25"
wc_start() {  # port model name [extra vllm flags]: a server in /tmp/wc (kept if an earlier run here started it)
    mkdir -p /tmp/wc
    [ -e "/tmp/wc/$3.pid" ] && return  # (started by an earlier run on this machine: STARTONLY=1)
    setsid python3 -m vllm.entrypoints.cli.main serve "/root/models/$2" --port "$1" $WC_FLAGS ${4:-} \
        > "/tmp/wc/$3.log" 2>&1 < /dev/null &
    echo $! > "/tmp/wc/$3.pid"
    sleep 4
}
wc_warm() {  # log port model: the first requests are cold; send some before measuring
    python3 benchmarks/gpu/loadgen.py --url "http://127.0.0.1:$2" --model "/root/models/$3" --input 1024 --output 16 \
        --concurrency 4 --prompts 8 > /dev/null 2>> "$1"
}
wc_point() {  # log port model name [loadgen flags]: one point, a line in $OUT/points.jsonl (within $BUDGET_S)
    local log=$1 port=$2 model=$3 name=$4; shift 4
    if [ "$SECONDS" -gt "${BUDGET_S:-100000}" ]; then echo "{\"point\": \"$name\", \"skipped\": \"run time\"}" >> "$OUT/points.jsonl"; return; fi
    python3 benchmarks/gpu/loadgen.py --url "http://127.0.0.1:$port" --model "/root/models/$model" --name "$name" "$@" \
        >> "$OUT/points.jsonl" 2>> "$log"
}
