"""GPU and model profiles for the `sim` engine: constants from spec sheets and model configs.

A step of the engine loop lasts `overhead + max(compute, memory)` (a roofline per iteration):
  compute = 2 x params x tokens_in_step / (peak_flops x mfu)
  memory  = (weight_bytes + kv_bytes_read) / (bandwidth x bandwidth_efficiency)
KV capacity = (gpu_memory x gpu_memory_utilization - weight_bytes) / kv_bytes_per_token.
The efficiencies (`mfu`, `bandwidth_efficiency`) are fitted per GPU family to published vLLM
measurements (docs/benchmarks.md, "Calibration"); profiles without a published point take the
Ampere fit and say so there.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
BIG_GPU_GIB = 70  # vLLM 0.22 gives GPUs with this much memory (A100s excepted) an 8,192-token step budget


@dataclass(frozen=True)
class GPU:
    """One accelerator's datasheet figures (dense BF16, no sparsity)."""

    name: str
    peak_tflops: float
    bandwidth_gbs: float  # GB/s (10^9 bytes)
    memory_gib: float
    mfu: float = 0.55  # share of peak FLOP/s a prefill step reaches (fitted; Ampere by default)
    bandwidth_efficiency: float = 0.70  # share of peak bandwidth a decode step reaches (fitted)


@dataclass(frozen=True)
class Model:
    """A served model's size and attention shape, from its config.json (BF16 weights and KV cache)."""

    name: str
    params_b: float  # billions of parameters
    layers: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int = 2

    @property
    def weight_bytes(self) -> float:
        """Bytes of weights read by every step."""
        return self.params_b * 1e9 * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of every layer for one token."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes


GPUS = {
    g.name: g
    for g in (
        # Hopper reaches a smaller share of its (much higher) peak in vLLM's prefill (Lambda's runs)
        GPU("h100", 989.0, 3350.0, 80.0, mfu=0.35),  # H100 SXM5 80 GB
        GPU("h200", 989.0, 4800.0, 141.0, mfu=0.35),  # H200 SXM 141 GB (Hopper fit, not calibrated)
        GPU("a100", 312.0, 2039.0, 80.0),  # A100 SXM 80 GB
        GPU("a100-40gb", 312.0, 1555.0, 40.0),  # A100 SXM/PCIe 40 GB
        GPU("a10g", 125.0, 600.0, 24.0),  # A10 datasheet (AWS's A10G); Ampere fit, not calibrated
        GPU("l4", 121.0, 300.0, 24.0),  # L4 24 GB (Ada); Ampere fit, not calibrated
    )
}

MODELS = {
    m.name: m
    for m in (
        Model("llama-3.1-8b", 8.03, 32, 8, 128),
        # Qwen3-8B: 36 layers, 32 query / 8 KV heads of 128, hidden 4,096, MLP 12,288, vocab 151,936 (untied)
        Model("qwen3-8b", 8.19, 36, 8, 128),
        Model("qwen2.5-7b", 7.62, 28, 4, 128),
        Model("mistral-7b", 7.25, 32, 8, 128),
        Model("qwen2.5-14b", 14.77, 48, 8, 128),
        Model("smollm2-135m", 0.135, 30, 3, 64),
    )
}


@dataclass(frozen=True)
class Generation:
    """One vLLM release as the sim models it: its scheduler's defaults and the speeds fitted to it.

    `fits` holds (mfu, bandwidth_efficiency) per GPU profile measured under this release; other profiles
    keep their own (the 0.6-era fit). The frontend (HTTP, tokenization: serial work per request) and the
    lag between a token made and the client seeing it are part of what a client measures.
    """

    name: str
    big_gpu_step_tokens: int  # max_num_batched_tokens on GPUs of >= BIG_GPU_GIB that are not A100s
    step_tokens: int  # max_num_batched_tokens elsewhere
    fits: dict[str, tuple[float, float]]
    batch_slowdown: float = 0.0  # each extra sequence in a step adds this share of the batch-1 step
    frontend_ms: float = 0.0
    ttft_overhead_ms: float = 0.0
    # the next step is scheduled while this one runs (vLLM's `async_scheduling`, on by default in 0.22):
    # a request that reaches the engine core during a step joins the step after the next
    async_scheduling: bool = False
    admit_ms: float = 0.0  # engine time per request a step admits

    def step_budget(self, gpu: GPU) -> int:
        """vLLM's default `max_num_batched_tokens` for its OpenAI server on `gpu`."""
        big = gpu.memory_gib >= BIG_GPU_GIB and not gpu.name.startswith("a100")
        return self.big_gpu_step_tokens if big else self.step_tokens


GENERATIONS = {
    g.name: g
    for g in (
        # vLLM 0.6 (2024): Lambda's and Musgrave's published runs; one 2,048-token budget everywhere
        Generation("0.6", 2048, 2048, {}),
        # vLLM 0.22 (Dec. 2026), measured on the lent H200 (docs/benchmarks.md, "Calibration"): prefill
        # at ~41k tokens/s (67% of peak), decode at 69% of peak bandwidth; the H100 (same Hopper chip,
        # less and slower memory) takes the H200's efficiencies. Async scheduling is its default
        # (vllm/config/vllm.py); 2 ms of engine time per admitted request, 1 ms of frontend and 11 ms of
        # lag are fitted to the H200 points (the server's own histograms split them the same way)
        Generation(
            "0.22",
            8192,
            2048,
            {"h200": (0.667, 0.69), "h100": (0.667, 0.69)},
            batch_slowdown=0.0015,
            frontend_ms=1.0,
            ttft_overhead_ms=11.0,
            async_scheduling=True,
            admit_ms=2.0,
        ),
    )
}
# A GPU profile's generation when none is asked for: the measured modern one where it was measured
DEFAULT_GENERATION = {"h100": "0.22", "h200": "0.22"}
LEGACY_GENERATION = "0.6"
