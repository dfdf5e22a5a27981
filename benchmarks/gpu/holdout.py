"""The sim's predictions for the held-out points of benchmarks/gpu/calib4.sh, printed before measuring them.

Each point is replayed as `wwwserve.bench.calibration.replay` replays a calibration point (closed loop,
the `gpu=h200` profile, vLLM 0.22), with the KV cache the servers of calib4.sh have (10 GiB each).

    python benchmarks/gpu/holdout.py > docs/gpu-runs/run19-holdout/predicted.json
"""

from __future__ import annotations

import json

from wwwserve.bench.calibration import replay
from wwwserve.engines.hardware import MODELS
from wwwserve.engines.sim import SimOptions

KV_BYTES = 10 * 1024**3  # --kv-cache-memory-bytes of each server
# name: (model, input, output, concurrency, prompts), as calib4.sh runs them
POINTS = {
    "l-128-256-c64": ("llama-3.1-8b", 128, 256, 64, 192),
    "l-1024-128-c16": ("llama-3.1-8b", 1024, 128, 16, 64),
    "l-4096-256-c8": ("llama-3.1-8b", 4096, 256, 8, 32),
    "l-512-512-c32": ("llama-3.1-8b", 512, 512, 32, 64),
    "qn-2048-128-c16": ("qwen3-8b", 2048, 128, 16, 64),
    "qn-128-256-c64": ("qwen3-8b", 128, 256, 64, 192),
    "qn-256-1024-c48": ("qwen3-8b", 256, 1024, 48, 48),
    "qn-1024-128-c1": ("qwen3-8b", 1024, 128, 1, 24),
    "l-128-256-c128-one": ("llama-3.1-8b", 128, 256, 128, 256),
    "qn-128-256-c128-one": ("qwen3-8b", 128, 256, 128, 256),
}


def main() -> None:
    """Print one JSON object: point -> the sim's mean/median TTFT, mean TPOT and output tokens/s."""
    out = {}
    for name, (model, i, o, c, n) in POINTS.items():
        kv = KV_BYTES // MODELS[model].kv_bytes_per_token
        profile = {"gpu": "h200", "model": model, "vllm": "0.22"}
        opts = SimOptions.from_opts({**profile, "prefix_caching": "0", "kv_capacity_tokens": str(kv)})
        r = replay(opts, [(i, o)] * n, c)
        out[name] = {k: round(r[k], 2) for k in ("ttft_ms", "median_ttft_ms", "tpot_ms", "output_tps")}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
