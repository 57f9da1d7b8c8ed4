"""Which dtype, matrix kernel, weight format and device a forward runs in, and the model cast.

`auto` resolves from measurements on this project's reference CPU (AMD EPYC Zen 4, 2 threads,
SmolLM2-135M, one target forward at context 200; bench/results/engine.md has the full run, and
`python -m engine.profile` re-measures any machine):

| path | 1 token | 9 tokens | 9 / 1 | plain tok/s | greedy identity |
|---|---:|---:|---:|---:|---|
| float32 dense (K-major) | 43 ms | 85 ms | 1.95 | 18.6 | exact to fp32 rounding |
| float32 prepacked (oneDNN) | 46 ms | 43 ms | 0.93 | 21.9 | same; 55/55 chains' outputs equal plain |
| bfloat16 prepacked (oneDNN) | 35 ms | 37 ms | 1.05 | 25.7 | decode vs 9-token forward: argmax flips at 5 of 130 positions (4 exact bf16 ties) |

bf16 is faster but not batch-invariant: oneDNN's bf16 products and SDPA give a row results that
differ by an ulp with the number of rows they share (measured at the attention output and the
MLP's down product), and bf16 logits tie often, so a speculative run's greedy output drifts from plain
decoding. float32 prepacked keeps the identity promise and is flat, so it is `auto` on CPU;
bf16 is a documented opt-in (bench_engine: 13 of its 55 plain replies equal the fp32 ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from engine.linear_kernels import KERNELS, WEIGHT_FORMATS, prepacked_available

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES)
KERNEL_CHOICES = ("auto", *KERNELS)
DEVICE_CHOICES = ("auto", "cpu", "cuda")
ATTENTION_CHOICES = ("invariant", "sdpa")


@dataclass(frozen=True)
class Precision:
    """A resolved forward path."""

    dtype: torch.dtype
    kernel: str                  # "dense" | "prepacked"
    weights: str                 # "dense" | "int8" | "int4"
    device: torch.device

    @property
    def name(self) -> str:
        """A stable key for profiles and calibrations: e.g. `float32-prepacked`, `bfloat16-dense-int8`."""
        parts = [str(self.dtype).removeprefix("torch."), self.kernel]
        if self.weights != "dense":
            parts.append(self.weights)
        return "-".join(parts)


def check_choices(dtype: str, kernel: str, weights: str, device: str) -> None:
    for label, value, choices in (("dtype", dtype, DTYPE_CHOICES), ("kernel", kernel, KERNEL_CHOICES),
                                  ("weights", weights, WEIGHT_FORMATS), ("device", device, DEVICE_CHOICES)):
        if value not in choices:
            raise ValueError(f"{label} must be one of {', '.join(choices)}, got {value!r}")


def resolve_precision(dtype: str = "auto", kernel: str = "auto", weights: str = "dense",
                      device: str = "auto") -> Precision:
    """`auto` -> the fastest path that keeps greedy identity on this hardware (module doc)."""
    check_choices(dtype, kernel, weights, device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    torch_device = torch.device(device)
    torch_dtype = DTYPES["float32" if dtype == "auto" else dtype]
    if kernel == "auto":
        kernel = "prepacked" if prepacked_available(torch_dtype, torch_device) else "dense"
    elif kernel == "prepacked" and not prepacked_available(torch_dtype, torch_device):
        raise ValueError(f"the prepacked kernel needs a CPU torch build with oneDNN; "
                         f"not available for {torch_dtype} on {torch_device}")
    if weights != "dense" and torch_device.type != "cpu":
        raise ValueError(f"--weights {weights} uses CPU weight-only kernels; run it with --device cpu")
    return Precision(torch_dtype, kernel, weights, torch_device)


def prepare_model(model: PreTrainedModel, precision: Precision) -> PreTrainedModel:
    """Cast and move the model in place (tied weights stay tied); returns it. Every parameter is
    checked: a head that shares the target's (already cast) embedding has its own layers too."""
    if any(p.dtype != precision.dtype or p.device != precision.device for p in model.parameters()):
        model.to(device=precision.device, dtype=precision.dtype)
    return model.eval()


@dataclass
class PrecisionArgs:
    """The forward-path options every command that builds an engine takes (`--dtype` ...)."""

    dtype: str = field(default="auto", metadata={
        "help": "auto (float32 on CPU: exact greedy identity), float32 or bfloat16 (faster opt-in; "
                "greedy output may drift from plain decoding)"})
    kernel: str = field(default="auto", metadata={"help": "matrix kernel: auto, dense or prepacked (oneDNN)"})
    weights: str = field(default="dense", metadata={
        "help": "dense, or int8 / int4 weight-only quantization (changes the model: a different target)"})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu or cuda"})
    attention: str = field(default="invariant", metadata={
        "help": "the target's attention: invariant (decode and verification agree in every bit) or sdpa"})

    def precision_kwargs(self, release_model_weights: bool = False) -> dict:
        """The EngineConfig fields these options set. A command whose engine owns the model it
        loaded passes `release_model_weights=True` (EngineConfig documents what that means)."""
        return {"dtype": self.dtype, "kernel": self.kernel, "weights": self.weights, "device": self.device,
                "attention": self.attention, "release_model_weights": release_model_weights}
