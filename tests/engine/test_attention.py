"""Batch-invariant attention: the same values as SDPA, and the same bits for a query whatever
else the forward holds (other queries of its row, other rows, a longer span of keys)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.attention import invariant_attention


def make_inputs(batch=2, heads=6, kv_heads=2, width=9, span=150, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, width, dim, generator=generator)
    keys = torch.randn(batch, kv_heads, span + width, dim, generator=generator)
    values = torch.randn(batch, kv_heads, span + width, dim, generator=generator)
    positions = torch.arange(span, span + width).repeat(batch, 1)                  # [b, t]
    return q, keys, values, positions


def test_values_match_sdpa_with_a_causal_mask():
    q, keys, values, positions = make_inputs()
    mask = torch.arange(keys.shape[2])[None, None, None, :] <= positions[:, None, :, None]
    expected = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
    assert torch.allclose(invariant_attention(q, keys, values, positions), expected, atol=1e-5)


def test_a_query_gets_the_same_bits_alone_verified_batched_or_over_a_longer_span():
    q, keys, values, positions = make_inputs()
    verified = invariant_attention(q, keys, values, positions)                   # 9 queries, 2 rows
    span = positions[0, 0].item()
    for j in range(q.shape[2]):
        end = span + j + 1
        alone = invariant_attention(q[:1, :, j:j + 1], keys[:1, :, :end], values[:1, :, :end], positions[:1, j:j + 1])
        assert torch.equal(alone[0, :, 0], verified[0, :, j]), f"query {j}"
        longer = invariant_attention(q[1:, :, j:j + 1], keys[1:], values[1:], positions[1:, j:j + 1])
        assert torch.equal(longer[0, :, 0], verified[1, :, j]), f"query {j} over the whole span"


def test_stale_keys_beyond_a_query_never_reach_it():
    q, keys, values, positions = make_inputs(batch=1, width=1)
    out = invariant_attention(q, keys, values, positions)
    stale_keys, stale_values = keys.clone(), values.clone()
    stale_keys[:, :, positions[0, 0] + 1:] = 1e4                             # finite garbage past the query
    stale_values[:, :, positions[0, 0] + 1:] = -1e4
    assert torch.equal(invariant_attention(q, stale_keys, stale_values, positions), out)
