"""A decoder layer's matrix products, fused by input: one q/k/v product and one gate/up product.

A decode step is dominated by fixed costs per call, not by arithmetic (SmolLM2, 1 row: 30 layers
x 7 products), so matrices that read the same input are concatenated once, here, and multiplied
in one call: q/k/v read the attention norm's output, gate/up the MLP norm's. Measured (SmolLM2
shapes, fp32 prepacked, one thread, Zen 3): q/k/v + gate/up per layer 584 -> 370 us for 1 row,
1765 -> 1476 us for 16 rows. Each output row of
a fused product is the same dot product as in the separate one, so int8 (per output channel) and
int4 (per output row and input group) quantize a fused matrix exactly as they would each part.

Products are laid out once per model and shared by every runner over it, weakly keyed by the
group's first nn.Linear, so a model's products go with it and a deep copy starts with none.
Memory stays one copy of each weight:
- a kernel with its own layout (prepacked, int8, int4): the fused matrix is the kernel's copy,
  and with `release` the model's parameters are freed; a later runner restores them bit for bit
  from a prepacked product;
- dense kernel, dense weights: the group stays the model's own parameters, re-laid K-major in
  place (`ConcatLinear`, one call per part then one concatenation). Fusing them would take a
  second copy, or make the parameters strided views into one K-major matrix, which transformers'
  save_pretrained cannot write (its shared-tensor check views each as 1-D).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from engine.draft_model import vocab_subset_digest
from engine.linear_kernels import ConcatLinear, DenseLinear, Linear, PrepackedLinear, k_major_in_place, make_linear

# {first nn.Linear of a group: {(group, kernel, weights): product}}
_PRODUCTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# reduced-vocabulary heads by (id of the full head's Parameter, kernel, weights, subset digest):
# a tensor cannot key a WeakKeyDictionary (its == is elementwise), so each entry holds a weak
# reference to check that the id still names that Parameter, and goes when the Parameter does
_SUBSET_HEADS: dict[tuple, tuple[weakref.ref, Linear]] = {}


@dataclass
class LayerWeights:
    """One decoder layer: three fused products, the output projections and the norm weights."""

    qkv: Linear                # hidden -> (nh + 2 kvh) * d: q, then k, then v
    o: Linear                  # nh * d -> hidden
    gate_up: Linear            # hidden -> 2 * inter: gate, then up
    down: Linear               # inter -> hidden
    input_norm: torch.Tensor   # [hidden]
    post_norm: torch.Tensor    # [hidden]

    @property
    def products(self) -> tuple[Linear, ...]:
        return self.qkv, self.o, self.gate_up, self.down


def _restore_released(projs: tuple[nn.Linear, ...], products: dict, group: str) -> None:
    """Give released parameters back their values from a prepacked product of the same group."""
    source = next((p for (g, *_), p in products.items() if g == group and isinstance(p, PrepackedLinear)), None)
    if source is None:
        raise ValueError(f"this model's weights were released to the {sorted(products)} kernels; "
                         f"load it again for this kernel")
    dense = source.dense_weight()                                              # [sum(out), in]
    for proj, part in zip(projs, dense.split([p.out_features for p in projs])):
        proj.weight.data = part.clone()


@torch.no_grad()
def _fused_bias(projs: tuple[nn.Linear, ...]) -> torch.Tensor | None:
    """The group's biases concatenated (zeros where a part has none); None if none has one."""
    if all(p.bias is None for p in projs):
        return None
    if len(projs) == 1:
        return projs[0].bias.detach()
    return torch.cat([p.bias.detach() if p.bias is not None else p.weight.new_zeros(p.out_features)
                      for p in projs])


def fused_product(projs: tuple[nn.Linear, ...], group: str, kernel: str, weights: str,
                  release: bool) -> Linear:
    """The product of `projs` (all reading one input), outputs concatenated in order; one per
    (model, group, kernel, weights), shared by every runner over the model."""
    products = _PRODUCTS.setdefault(projs[0], {})
    key = (group, kernel, weights)
    if key in products:
        return products[key]
    if any(p.weight.numel() == 0 for p in projs):     # released: restore it exactly
        _restore_released(projs, products, group)
    shares = kernel == "dense" and weights == "dense"
    if shares:          # the model's parameters, re-laid K-major in place
        parts = [DenseLinear(k_major_in_place(p.weight), None if p.bias is None else p.bias.detach())
                 for p in projs]
        products[key] = parts[0] if len(parts) == 1 else ConcatLinear(parts)
        return products[key]
    weight = torch.cat([p.weight.detach() for p in projs]) if len(projs) > 1 else projs[0].weight.detach()
    products[key] = make_linear(weight, _fused_bias(projs), kernel, weights)
    if release:
        for proj in projs:
            proj.weight.data = proj.weight.data.new_empty(0)
    return products[key]


def layer_weights(layer: nn.Module, kernel: str, weights: str, release: bool) -> LayerWeights:
    """The products of one Llama-family decoder layer."""
    attn, mlp = layer.self_attn, layer.mlp
    return LayerWeights(
        qkv=fused_product((attn.q_proj, attn.k_proj, attn.v_proj), "qkv", kernel, weights, release),
        o=fused_product((attn.o_proj,), "o", kernel, weights, release),
        gate_up=fused_product((mlp.gate_proj, mlp.up_proj), "gate_up", kernel, weights, release),
        down=fused_product((mlp.down_proj,), "down", kernel, weights, release),
        input_norm=layer.input_layernorm.weight.detach(),
        post_norm=layer.post_attention_layernorm.weight.detach(),
    )


def head_product(module: nn.Module, head: torch.Tensor, kernel: str, head_weights: str) -> Linear:
    """The LM head's product, shared by every runner over the same head: a target and its
    quantized copy score with one prepacked head."""
    products = _PRODUCTS.setdefault(module, {})
    key = ("head", kernel, head_weights)
    if key not in products:
        products[key] = make_linear(head, None, kernel, head_weights)
    return products[key]


def subset_head(weight: torch.Tensor, subset: torch.Tensor, rows: torch.Tensor, kernel: str,
                head_weights: str) -> Linear:
    """The product of `rows` (the subset's rows of `weight`), one per (head, subset, kernel):
    drafts over the same reduced vocabulary of the target's head (the distilled draft and the
    EAGLE head: 36 MB each for SmolLM2) score with one."""
    key = (id(weight), kernel, head_weights, vocab_subset_digest(subset.cpu()))
    entry = _SUBSET_HEADS.get(key)
    if entry is not None and entry[0]() is weight:
        return entry[1]
    product = make_linear(rows, None, kernel, head_weights)
    _SUBSET_HEADS[key] = (weakref.ref(weight), product)
    weakref.finalize(weight, _SUBSET_HEADS.pop, key, None)
    return product
