"""A preallocated, growable and shrinkable KV cache with per-slot lengths: rollback is moving a length."""

from __future__ import annotations

import torch

from engine.heap import return_freed_memory


def _round_up(length: int, block: int) -> int:
    return -(-length // block) * block


class KVCache:
    """Keys and values of every layer for `num_slots` rows, each with its own committed length.

    Layout per layer: `[num_slots, num_kv_heads, capacity, head_dim]`. Positions at or beyond a
    slot's length are stale and never read: the attention mask stops at the query position.
    Memory follows the longest live row: capacity grows to the needed length rounded up to a
    block, by at least `growth` of itself so that copies stay amortised, and shrinks once that
    row is freed and the longest live one needs at most half of it (hysteresis: it shrinks to
    `growth` above the live rows, so a row growing again does not copy at once). Resizing copies
    one layer at a time, so the transient is a layer, not a second cache. Slots double when all
    are taken and are never given back (a free slot costs `capacity` positions).

    With `feature_size`, `features` `[num_slots, capacity, feature_size]` also holds each
    position's final hidden state (the target's, for an EAGLE level that reads them): it grows,
    shrinks and rolls back with the keys, so it always covers exactly a slot's length.
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype = torch.float32, initial_slots: int = 1, initial_len: int = 256,
                 block_len: int = 64, growth: float = 0.25, device: torch.device | str = "cpu",
                 feature_size: int = 0):
        if block_len < 1 or growth < 0:
            raise ValueError(f"block_len must be >= 1 and growth >= 0, got {block_len} and {growth}")
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.max_len = max_len
        self.dtype = dtype
        self.device = torch.device(device)
        self.block_len = block_len
        self.growth = growth
        self.min_capacity = min(initial_len, max_len)
        self.lengths: list[int] = []
        self.free_slots: list[int] = []
        self.is_free: list[bool] = []            # per slot, so that freeing checks in O(1)
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.feature_size = feature_size
        self.features: torch.Tensor | None = None      # [num_slots, capacity, feature_size]
        self._resize(initial_slots, self.min_capacity)

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    @property
    def num_slots(self) -> int:
        return len(self.lengths)

    def longest_live(self) -> int:
        """The longest length any allocated slot holds (0 when all are free)."""
        return max((n for n, free in zip(self.lengths, self.is_free) if not free), default=0)

    def _fitted_capacity(self, length: int, at_least: int) -> int:
        """`length` rounded up to a block, but no less than `at_least`, within [min, max_len]."""
        return max(self.min_capacity, min(self.max_len, max(_round_up(length, self.block_len), at_least)))

    def _resize(self, num_slots: int, capacity: int) -> None:
        """Reallocate every layer as [num_slots, kvh, capacity, d], keeping what live rows hold."""
        shape = (num_slots, self.num_kv_heads, capacity, self.head_dim)
        if self.keys:
            keep_slots = min(self.num_slots, num_slots)
            keep = min(self.capacity, capacity, self.longest_live())
            for tensors in (self.keys, self.values):
                for index, old in enumerate(tensors):
                    # zeros, not empty: masked positions are still multiplied by 0 in attention
                    new = torch.zeros(shape, dtype=self.dtype, device=self.device)
                    if keep:
                        new[:keep_slots, :, :keep] = old[:keep_slots, :, :keep]
                    tensors[index] = new
                    del old, new
                    # the old layer goes now, and its hole in the C heap back to the OS (a new,
                    # larger layer does not fit in it): a one-layer transient, not a second cache
                    return_freed_memory()
        else:
            self.keys = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.num_layers)]
            self.values = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.num_layers)]
        if self.feature_size:
            old = self.features
            self.features = torch.zeros((num_slots, capacity, self.feature_size), dtype=self.dtype, device=self.device)
            if old is not None:
                keep_slots, keep = min(old.shape[0], num_slots), min(old.shape[1], capacity, self.longest_live())
                self.features[:keep_slots, :keep] = old[:keep_slots, :keep]
                del old
                return_freed_memory()
        grown = num_slots - len(self.lengths)
        self.free_slots.extend(range(len(self.lengths), num_slots))
        self.is_free.extend([True] * grown)
        self.lengths.extend([0] * grown)

    def allocate_slot(self) -> int:
        """A free slot with length 0."""
        if not self.free_slots:
            self._resize(self.num_slots * 2, self.capacity)
        slot = self.free_slots.pop(0)
        self.is_free[slot] = False
        self.lengths[slot] = 0
        return slot

    def free_slot(self, slot: int) -> None:
        """Release a slot at once; its stale contents are overwritten by the next owner. Shrinks
        the cache when the rows left need at most half of its capacity."""
        if self.is_free[slot]:
            raise ValueError(f"slot {slot} is already free")
        self.lengths[slot] = 0
        self.is_free[slot] = True
        self.free_slots.append(slot)
        self.shrink_to_fit()

    def shrink_to_fit(self) -> bool:
        """Give back capacity once the longest live row needs at most half of it; whether it did."""
        longest = self.longest_live()
        if self.capacity <= self.min_capacity or 2 * longest > self.capacity:
            return False
        capacity = self._fitted_capacity(longest, _round_up(int(longest * (1 + self.growth)), self.block_len))
        if capacity >= self.capacity:
            return False
        self._resize(self.num_slots, capacity)
        return True

    def rollback(self, slot: int, length: int) -> None:
        """Forget every position at or after `length`: O(1)."""
        if not 0 <= length <= self.lengths[slot]:
            raise ValueError(f"cannot roll slot {slot} back to {length}: it holds {self.lengths[slot]}")
        self.lengths[slot] = length

    def ensure_capacity(self, length: int) -> None:
        if length > self.max_len:
            raise ValueError(f"sequence of {length} tokens exceeds the context length {self.max_len}")
        if length > self.capacity:
            floor = _round_up(int(self.capacity * (1 + self.growth)), self.block_len)
            self._resize(self.num_slots, self._fitted_capacity(length, floor))

    @property
    def num_free_slots(self) -> int:
        return len(self.free_slots)

    def nbytes(self) -> int:
        tensors = self.keys + self.values + ([] if self.features is None else [self.features])
        return sum(t.numel() * t.element_size() for t in tensors)
