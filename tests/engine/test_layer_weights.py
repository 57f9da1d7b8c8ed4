"""Fused products: one call per group, the same model as the separate products."""

from __future__ import annotations

import pytest
import torch

from engine.layer_weights import layer_weights
from engine.linear_kernels import ConcatLinear, Int4Linear, Int8Linear, prepacked_available
from tests.tiny_models import build_tiny_llama


def test_quantizing_a_fused_matrix_quantizes_each_part_as_alone():
    """int8 scales per output row and int4 per output row and input group, so a fused q/k/v
    matrix is the same quantized model as its parts."""
    torch.manual_seed(0)
    parts = [torch.randn(n, 64) for n in (64, 32, 32)]
    fused = Int8Linear(torch.cat(parts))
    alone = [Int8Linear(p) for p in parts]
    assert torch.equal(fused.weight, torch.cat([a.weight for a in alone]))
    assert torch.equal(fused.scales, torch.cat([a.scales for a in alone]))
    x = torch.randn(3, 64)
    assert torch.allclose(Int4Linear(torch.cat(parts))(x), torch.cat([Int4Linear(p)(x) for p in parts], -1))


@pytest.mark.parametrize("kernel", ["dense", "prepacked"])
def test_a_layer_makes_four_product_calls_that_match_the_model(kernel):
    if kernel == "prepacked" and not prepacked_available(torch.float32, torch.device("cpu")):
        pytest.skip("this torch build has no oneDNN")
    layer = build_tiny_llama(seed=3, num_layers=1).model.layers[0]
    weights = layer_weights(layer, kernel, "dense", release=False)
    assert len(weights.products) == 4
    attn, mlp = layer.self_attn, layer.mlp
    h = torch.randn(2, 5, 64)
    with torch.no_grad():
        want_qkv = torch.cat([attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)], -1)
        want_gate_up = torch.cat([mlp.gate_proj(h), mlp.up_proj(h)], -1)
    assert torch.allclose(weights.qkv(h), want_qkv, atol=1e-6)
    assert torch.allclose(weights.gate_up(h), want_gate_up, atol=1e-6)
    assert isinstance(weights.qkv, ConcatLinear) == (kernel == "dense")    # dense multiplies the model's own
