"""Everything a forward indexes by, built once per forward on the host: every layer reads it.

A ragged batch (each row its own slot, start and token count) is padded to `[batch, width]`.
The layers then need the same few tensors: where each fed token is written in the KV cache,
which keys each query may see, the rotary angles of each position. Built here once, they cost
a handful of small ops per forward instead of per layer, and the layer loop never reads a
tensor's value on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.attention import ATTENTION_BLOCK, hidden_keys


@dataclass
class ForwardIndex:
    """A forward's batch layout. Shapes: b rows, t = width (the longest row's token count)."""

    batch: int
    width: int
    span: int                              # keys attended: the longest row's end (a whole block when invariant)
    tokens: torch.Tensor                   # [b, t] token ids, padding 0
    positions: torch.Tensor                # [b, t] each fed token's position (padding clamped)
    write_slots: torch.Tensor              # [n] the cache slot of each real fed token (n = sum of counts)
    write_pos: torch.Tensor                # [n] its position
    flat_index: torch.Tensor | None        # [n] its index in the flattened [b * t]; None when no padding
    slot_index: torch.Tensor | None        # [b] the rows' slots; None when they are contiguous
    first_slot: int                        # the first row's slot (contiguous rows are a slice)
    cos: torch.Tensor                      # [b, t, 1, d] rotary cosines
    sin: torch.Tensor                      # [b, t, 1, d] rotary sines, first half negated
    hidden: torch.Tensor | None            # invariant attention's masked keys (engine.attention.hidden_keys)
    mask: torch.Tensor | None              # SDPA's [b, 1, t, span] visible keys; None when invariant

    @classmethod
    def build(cls, slots: list[int], tokens: list[list[int]], starts: list[int], cos: torch.Tensor,
              sin: torch.Tensor, capacity: int, invariant: bool, heads_per_kv: int) -> ForwardIndex:
        """`cos`/`sin` are the runner's [max_len, d] tables (`rotary_tables`); `capacity` the
        cache's, which the forward's end must not exceed."""
        device = cos.device
        batch = len(slots)
        counts = [len(t) for t in tokens]
        width = max(counts)
        span = max(s + n for s, n in zip(starts, counts))
        padded = torch.tensor([toks + [0] * (width - len(toks)) for toks in tokens]).to(device)  # [b, t]
        start_t = torch.tensor(starts).to(device)
        positions = (start_t[:, None] + torch.arange(width, device=device)[None, :]).clamp(max=cos.shape[0] - 1)
        # rows write their real tokens only: flat (slot, position) pairs, a ragged batch's
        # padding left out by one index computed here instead of a boolean mask per layer
        ragged = min(counts) != width
        flat_index = None
        if ragged:
            flat_index = torch.tensor([i * width + j for i, n in enumerate(counts) for j in range(n)]).to(device)
        write = torch.tensor([[s, p] for s, start, n in zip(slots, starts, counts)
                              for p in range(start, start + n)]).to(device)                 # [n, 2]
        contiguous = slots == list(range(slots[0], slots[0] + batch))
        slot_index = None if contiguous else torch.tensor(slots).to(device)
        hidden = mask = None
        if invariant:     # whole key blocks: the cache's capacity is a multiple of a block
            span = min(-(-span // ATTENTION_BLOCK) * ATTENTION_BLOCK, capacity)
            hidden = hidden_keys(positions, span, heads_per_kv)
        else:
            key_pos = torch.arange(span, device=device)
            mask = key_pos[None, None, None, :] <= positions[:, None, :, None]                  # [b, 1, t, span]
        return cls(batch, width, span, padded, positions, write[:, 0], write[:, 1], flat_index, slot_index,
                   slots[0], cos[positions][:, :, None], sin[positions][:, :, None], hidden, mask)


def rotary_tables(inv_freq: torch.Tensor, attention_scaling: float, max_len: int, dtype: torch.dtype,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, signed sin), [max_len, d] each, in the model dtype (angles in fp32, as transformers).

    Rotating by them is `x * cos + swap_halves(x) * sin`: with the first half of sin negated,
    that is transformers' `x * cos + rotate_half(x) * sin` bit for bit (negation is exact)."""
    positions = torch.arange(max_len, dtype=torch.float32, device=device)
    freqs = torch.outer(positions, inv_freq.float().to(device))                 # [max_len, d / 2]
    angles = torch.cat([freqs, freqs], dim=-1)                                  # [max_len, d]
    cos = (angles.cos() * attention_scaling).to(dtype)
    sin = (angles.sin() * attention_scaling).to(dtype)
    half = sin.shape[-1] // 2
    sin[:, :half] = -sin[:, :half]
    return cos, sin


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of `x` [..., heads, d] (any strides) by `cos`/`sin` [..., 1, d] from
    `rotary_tables`; a new contiguous tensor. Separate products and sum, not addcmul: that
    one fuses into FMAs, which round differently from transformers."""
    half = x.shape[-1] // 2
    swapped = x.unflatten(-1, (2, half)).flip(-2).flatten(-2)                  # [..., heads, d]: [x2, x1]
    return torch.mul(x, cos).add_(swapped.mul_(sin))
