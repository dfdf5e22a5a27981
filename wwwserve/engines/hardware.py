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
        Model("qwen2.5-7b", 7.62, 28, 4, 128),
        Model("mistral-7b", 7.25, 32, 8, 128),
        Model("qwen2.5-14b", 14.77, 48, 8, 128),
        Model("smollm2-135m", 0.135, 30, 3, 64),
    )
}
