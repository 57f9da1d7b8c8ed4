"""The matrix products of a forward, one object per weight, in the layout its kernel wants.

Which kernel runs is a measured choice (`engine/precision.py`, `python -m engine.profile`):

- `dense`: `F.linear` on the weight stored input-major (a transposed view of a contiguous
  [in, out]); on CPU that is 1.5-2x faster than row-major for the few-row products of decoding
  and verification in fp32.
- `prepacked`: the weight reordered once into oneDNN's blocked layout (fp32 or bf16), the
  layout inductor's freezing pass prepacks, called eagerly (no compile step). The product
  costs about the same for 1 and 17 rows, so verification costs about what a decode step does.
- `int8` / `int4`: weight-only quantized copies (per-channel int8, group-wise int4 with bf16
  activations). They change the model, so they are an explicit opt-in, never a default.

A kernel holds its own copy of the weight only where the layout differs from the model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

KERNELS = ("dense", "prepacked")
WEIGHT_FORMATS = ("dense", "int8", "int4")
QUANTIZED_FORMATS = ("int8", "int4")
INT4_GROUP_SIZE = 32
INT4_OUTPUT_BLOCK = 16           # the CPU int4 kernel packs outputs in blocks of this many


def k_major(weight: torch.Tensor) -> torch.Tensor:
    """The same [out, in] matrix stored input-major (a transposed view of a contiguous [in, out])."""
    return weight if weight.dim() != 2 or weight.stride(0) == 1 else weight.t().contiguous().t()


@torch.no_grad()
def k_major_in_place(param: torch.Tensor) -> torch.Tensor:
    """Re-lay a model parameter K-major in place (same values; the model and any tied weight
    see it too), so the runner shares it instead of holding a second copy."""
    if param.dim() == 2 and param.stride(0) != 1:
        param.data = k_major(param.data)
    return param.detach()


def prepacked_available(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether this torch build has the CPU prepack ops for `dtype`."""
    if device.type != "cpu":
        return False
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        if dtype == torch.bfloat16:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return dtype == torch.float32
    except (AttributeError, RuntimeError):
        return False


class Linear:
    """y = x @ W.T (+ b) for x of shape [..., in]; returns [..., out] in x's dtype."""

    out_features: int
    numel: int                           # weights the product multiplies by (out x in)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class DenseLinear(Linear):
    weight: torch.Tensor                 # [out, in], any layout (K-major is faster on CPU)
    bias: torch.Tensor | None = None

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @property
    def numel(self) -> int:
        return self.weight.numel()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class ConcatLinear(Linear):
    """Several products of one input, outputs concatenated: a fused group whose parts must stay
    separate matrices (the dense kernel multiplies the model's own K-major parameters, which
    cannot be views into one fused matrix: transformers' save_pretrained cannot write those)."""

    def __init__(self, parts: list[Linear]):
        self.parts = parts
        self.out_features = sum(p.out_features for p in parts)
        self.numel = sum(p.numel for p in parts)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(x) for part in self.parts], dim=-1)


class PrepackedLinear(Linear):
    """A weight reordered once into oneDNN's blocked layout (fp32 or bf16). `batch_hint` is the
    row count the reorder tunes for; 16 keeps 1-17 rows nearly flat (measured, engine.profile)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, batch_hint: int = 16):
        if weight.dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"no prepacked kernel for {weight.dtype}")
        self.out_features = weight.shape[0]
        self.numel = weight.numel()
        self.bias = bias
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch_hint)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def dense_weight(self) -> torch.Tensor:
        """The [out, in] weight back in plain layout, bit for bit."""
        return self.packed.to_dense()


class Int8Linear(Linear):
    """Per-output-channel symmetric int8 weights, activations in the model dtype."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        w = weight.detach().float()
        scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-8)                    # [out]
        self.weight = (w / scales[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
        self.scales = scales.to(weight.dtype)
        self.bias = bias
        self.out_features = weight.shape[0]
        self.numel = weight.numel()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = torch._weight_int8pack_mm(x.reshape(-1, shape[-1]), self.weight, self.scales)
        out = out.reshape(*shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias


class Int4Linear(Linear):
    """Group-wise asymmetric int4 weights (groups of INT4_GROUP_SIZE along the input), bf16
    activations and scales (the CPU kernel's contract)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, group_size: int = INT4_GROUP_SIZE):
        out_features, in_features = weight.shape
        if in_features % group_size:
            raise ValueError(f"int4 needs the input size {in_features} to be a multiple of {group_size}")
        w = weight.detach().float().reshape(out_features, in_features // group_size, group_size)
        low, high = w.amin(dim=-1), w.amax(dim=-1)                                 # [out, groups]
        scales = ((high - low) / 15).clamp(min=1e-8)
        q = ((w - low[..., None]) / scales[..., None]).round().clamp(0, 15).to(torch.int32)
        q = q.reshape(out_features, in_features)
        # the kernel's zero point is the value at code 8: w = (code - 8) * scale + zero
        zeros = low + 8 * scales
        # the kernel packs outputs in blocks of 16: pad with zero rows, sliced off after the product
        padding = -out_features % INT4_OUTPUT_BLOCK
        if padding:
            q = F.pad(q, (0, 0, 0, padding), value=8)
            scales, zeros = F.pad(scales, (0, 0, 0, padding), value=1.0), F.pad(zeros, (0, 0, 0, padding))
        self.packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
        self.scales_and_zeros = torch.stack([scales.t(), zeros.t()], dim=-1).to(torch.bfloat16).contiguous()
        self.group_size = group_size
        self.bias = bias
        self.out_features = out_features
        self.numel = weight.numel()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).to(torch.bfloat16)
        out = torch._weight_int4pack_mm_for_cpu(flat, self.packed, self.group_size, self.scales_and_zeros)
        out = out[:, : self.out_features].to(x.dtype).reshape(*shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias


def make_linear(weight: torch.Tensor, bias: torch.Tensor | None, kernel: str, weights: str = "dense") -> Linear:
    """The product for one [out, in] weight: `weights` picks the format, `kernel` the dense kernel."""
    if weights == "int8":
        return Int8Linear(weight, bias)
    if weights == "int4":
        return Int4Linear(weight, bias)
    if weights != "dense":
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    if kernel == "prepacked":
        return PrepackedLinear(weight, bias)
    if kernel != "dense":
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    return DenseLinear(weight, bias)
