"""Batch-invariant attention: a query's output does not depend on what else the forward holds.

Speculation is exact only if the target gives a position the same logits when it decodes it
alone and when it verifies it among drafted tokens. SDPA does not: its kernels pick their
blocking from how many queries and keys a forward holds, so the reduction over keys changes
order with them (measured: bitwise differences at every position between decode and
verification on fp32, argmax flips on bf16). This attention reduces in an order fixed by the
query's own position, the way the GPU batch-invariant modes (Thinking Machines'
batch_invariant_ops, vLLM `VLLM_BATCH_INVARIANT`, SGLang deterministic mode) fix their split
sizes:

- Queries go in tiles of `tile` positions; every tile is its own batched-matmul entry of
  exactly `heads_per_kv x tile` rows, so a matmul's shape never depends on how many tokens a row
  feeds (CPU GEMMs change their reduction with M: measured on oneDNN/MKL, fp32).
- Keys go in fixed blocks of `block` from key 0. Per block: scores (a fixed [M, d] x [d, block]
  product), the exponentials against the query's exact maximum over all its keys, their sum over
  the block and their product with the block's values (a fixed [M, block] x [block, d] product).
- Blocks are summed in order from block 0 with `cumsum` (a sequential scan on CPU), so blocks a
  query cannot see (all-masked: exactly zero) change nothing, whatever the span of the forward.

Masked keys contribute exact zeros, so stale cache contents (finite: the cache is zero-filled)
never reach a result.
"""

from __future__ import annotations

import torch

ATTENTION_BLOCK = 64                 # keys per block; the KV cache's capacity is a multiple of it


def hidden_keys(positions: torch.Tensor, span: int, heads_per_kv: int, tile: int = 1,
                block: int = ATTENTION_BLOCK) -> torch.Tensor:
    """What each query may not see, in the layout `invariant_attention` scores in:
    [b, 1, tiles, nblk, heads_per_kv * tile, block]; the same for every layer of a forward."""
    batch, width = positions.shape
    padded_span = -(-span // block) * block
    num_tiles = -(-width // tile)
    if num_tiles * tile != width:
        positions = torch.nn.functional.pad(positions, (0, num_tiles * tile - width))   # pad queries see key 0
    rows = heads_per_kv * tile
    key_index = torch.arange(padded_span, device=positions.device).view(padded_span // block, 1, block)
    query_pos = positions.view(batch, num_tiles, 1, tile).expand(batch, num_tiles, heads_per_kv, tile)
    query_pos = query_pos.reshape(batch, 1, num_tiles, 1, rows, 1)                       # [b, 1, tiles, 1, rows, 1]
    return key_index > query_pos                                                         # [b, 1, tiles, nblk, rows, block]


def invariant_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor,
                        tile: int = 1, block: int = ATTENTION_BLOCK, hidden: torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention of `q` [b, nh, t, d] over `keys`/`values` [b, kvh, span, d], where query
    (i, j) sees keys 0..positions[i, j]; returns [b, nh, t, d] in q's dtype. `span` may exceed
    what any query sees (padding to a block is free); it must be >= max(positions) + 1. `hidden`
    is `hidden_keys(...)` for these arguments, computed once per forward by a caller with layers."""
    batch, num_heads, width, dim = q.shape
    out = invariant_attention_rows(q.transpose(1, 2), keys, values, positions, tile, block, hidden)
    return out.view(batch, width, num_heads, dim).transpose(1, 2)


def invariant_attention_rows(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor,
                             tile: int = 1, block: int = ATTENTION_BLOCK,
                             hidden: torch.Tensor | None = None) -> torch.Tensor:
    """`invariant_attention` in the layout of a layer's products: `q` [b, t, nh, d] (any
    strides: a view of the fused q/k/v product), returns [b, t, nh * d] contiguous, the output
    projection's input, with no copy between."""
    batch, width, num_heads, dim = q.shape
    num_kv = keys.shape[1]
    rep = num_heads // num_kv
    span = keys.shape[2]
    padded_span = -(-span // block) * block
    if padded_span != span:
        pad = padded_span - span
        keys = torch.nn.functional.pad(keys, (0, 0, 0, pad))
        values = torch.nn.functional.pad(values, (0, 0, 0, pad))
    num_blocks = padded_span // block
    padded_width = -(-width // tile) * tile
    num_tiles = padded_width // tile
    if padded_width != width:
        q = torch.nn.functional.pad(q, (0, 0, 0, 0, 0, padded_width - width))
    if hidden is None:
        hidden = hidden_keys(positions, span, rep, tile, block)
    rows = rep * tile
    # [b, kvh, tiles, 1, rows, d]: one matmul entry per tile and key block, rows ordered (head,
    # tile position), scaled and laid out afresh in one copy, so that every entry's operands
    # have the same layout whatever the batch. Queries are the left operand: MKL multiplies
    # [rows, d] x [d, block] 4x faster than [block, d] x [d, rows] (192 entries, 1 thread).
    q_view = q.float().view(batch, num_tiles, tile, num_kv, rep, dim).permute(0, 3, 1, 4, 2, 5)
    q_tiles = torch.empty((batch, num_kv, num_tiles, rep, tile, dim), dtype=torch.float32, device=q.device)
    torch.mul(q_view, dim ** -0.5, out=q_tiles)
    shape = (batch, num_kv, num_tiles, num_blocks)
    q_tiles = q_tiles.view(batch, num_kv, num_tiles, 1, rows, dim).expand(*shape, rows, dim)
    # keys copied per tile into [.., block, d] rows whatever the forward (a slice of the cache or
    # not, one tile or many), and multiplied transposed: one operand layout for every forward
    key_blocks = keys.float().view(batch, num_kv, 1, num_blocks, block, dim).expand(*shape, block, dim)
    key_blocks = key_blocks.contiguous().transpose(-1, -2)                                # [b, kvh, tiles, nblk, d, block]
    value_blocks = values.float().view(batch, num_kv, 1, num_blocks, block, dim)         # [b, kvh, 1, nblk, block, d]
    scores = torch.matmul(q_tiles, key_blocks)                                            # [b, kvh, tiles, nblk, rows, block]
    scores.masked_fill_(hidden, float("-inf"))
    peak = scores.amax(dim=(3, 5), keepdim=True)                                          # exact: order-free
    weights = scores.sub_(peak).exp_()                                                    # [b, kvh, tiles, nblk, rows, block]
    totals = weights.sum(-1).cumsum(3)[:, :, :, -1]                                       # [b, kvh, tiles, rows]
    mixed = torch.matmul(weights, value_blocks).cumsum(3)[:, :, :, -1]                    # [b, kvh, tiles, rows, d]
    # divided straight into [b, t, nh * d]: (tile position, kv head, head in group, d)
    out = torch.empty((batch, num_tiles, tile, num_kv, rep, dim), dtype=q.dtype, device=q.device)
    torch.div(mixed.view(batch, num_kv, num_tiles, rep, tile, dim),
              totals.view(batch, num_kv, num_tiles, rep, tile, 1),
              out=out.permute(0, 3, 1, 4, 2, 5))
    out = out.view(batch, padded_width, num_heads * dim)
    return out if padded_width == width else out[:, :width].contiguous()
