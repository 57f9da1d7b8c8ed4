"""Which dtype, matrix kernel, weight format and device a forward runs in, and the model cast.

An engine's `auto` is decided on the machine that runs, by the cached self-test of
`engine.autotune` (speed at 1/9/16 tokens per row and decode-vs-verify invariance on the loaded
model). `resolve_precision` here only validates explicit choices and is the fallback where no
model is at hand (distillation): fp32, prepacked where oneDNN has the kernel. No machine's
figures are another's default; what each tested CPU chose is in the README and in
bench/results/engine.json (`path_selftest`).

Measured so far (bench/results, `python -m engine.autotune`):
- AMD EPYC Zen 3 (AVX2, no AVX-512/AMX; this session): no oneDNN bf16 kernel; fp32 prepacked is
  row-invariant for every row count, and with the invariant attention (engine/attention.py)
  decode and verification agree in every bit: auto = float32-prepacked.
- AMD EPYC Zen 4 (an earlier session): fp32 prepacked flat from 1 to 17 rows; bf16 flipped argmaxes
  under SDPA (before the invariant attention existed).
- Intel Xeon with AMX (an earlier session, issue 26): bf16 prepacked 1.5x faster than fp32 and
  row-invariant in its products; its self-test decides there.
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
    """The forward-path options every command that builds an engine takes (`--dtype` ...); the
    choices are declared so a bad value is a usage error before any model loads."""

    dtype: str = field(default="auto", metadata={
        "help": "auto (the fastest batch-invariant path the cached self-test finds on this machine: "
                "python -m engine.autotune), float32 or bfloat16", "choices": DTYPE_CHOICES})
    kernel: str = field(default="auto", metadata={
        "help": "matrix kernel: auto (self-test), dense or prepacked (oneDNN)", "choices": KERNEL_CHOICES})
    weights: str = field(default="dense", metadata={
        "help": "dense, or int8 / int4 weight-only quantization (changes the model: a different target)",
        "choices": WEIGHT_FORMATS})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu or cuda",
                                                  "choices": DEVICE_CHOICES})
    attention: str = field(default="invariant", metadata={
        "help": "the target's attention: invariant (decode and verification agree in every bit) or sdpa",
        "choices": ATTENTION_CHOICES})

    def precision_kwargs(self, release_model_weights: bool = False) -> dict:
        """The EngineConfig fields these options set. A command whose engine owns the model it
        loaded passes `release_model_weights=True` (EngineConfig documents what that means)."""
        return {"dtype": self.dtype, "kernel": self.kernel, "weights": self.weights, "device": self.device,
                "attention": self.attention, "release_model_weights": release_model_weights}
