"""A preallocated, growable KV cache with per-slot lengths: rollback is moving a length."""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer for `num_slots` rows, each with its own committed length.

    Layout per layer: `[num_slots, num_kv_heads, capacity, head_dim]`. Positions at or beyond a
    slot's length are stale and never read: the attention mask stops at the query position.
    Capacity grows by doubling (a rare copy), so memory follows the longest live row.
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype = torch.float32, initial_slots: int = 1, initial_len: int = 256):
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.max_len = max_len
        self.dtype = dtype
        self.lengths: list[int] = []
        self.free_slots: list[int] = []
        self.is_free: list[bool] = []            # per slot, so that freeing checks in O(1)
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._allocate(initial_slots, min(initial_len, max_len))

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    @property
    def num_slots(self) -> int:
        return len(self.lengths)

    def _allocate(self, num_slots: int, capacity: int) -> None:
        shape = (num_slots, self.num_kv_heads, capacity, self.head_dim)
        new_keys = [torch.zeros(shape, dtype=self.dtype) for _ in range(self.num_layers)]
        new_values = [torch.zeros(shape, dtype=self.dtype) for _ in range(self.num_layers)]
        if self.keys:
            old_slots, old_cap = self.keys[0].shape[0], self.keys[0].shape[2]
            keep = min(old_cap, capacity)
            for new, old in zip(new_keys + new_values, self.keys + self.values):
                new[:old_slots, :, :keep] = old[:, :, :keep]
        self.keys, self.values = new_keys, new_values
        grown = num_slots - len(self.lengths)
        self.free_slots.extend(range(len(self.lengths), num_slots))
        self.is_free.extend([True] * grown)
        self.lengths.extend([0] * grown)

    def allocate_slot(self) -> int:
        """A free slot with length 0."""
        if not self.free_slots:
            self._allocate(self.num_slots * 2, self.capacity)
        slot = self.free_slots.pop(0)
        self.is_free[slot] = False
        self.lengths[slot] = 0
        return slot

    def free_slot(self, slot: int) -> None:
        """Release a slot at once; its stale contents are overwritten by the next owner."""
        if self.is_free[slot]:
            raise ValueError(f"slot {slot} is already free")
        self.lengths[slot] = 0
        self.is_free[slot] = True
        self.free_slots.append(slot)

    def rollback(self, slot: int, length: int) -> None:
        """Forget every position at or after `length`: O(1)."""
        if not 0 <= length <= self.lengths[slot]:
            raise ValueError(f"cannot roll slot {slot} back to {length}: it holds {self.lengths[slot]}")
        self.lengths[slot] = length

    def ensure_capacity(self, length: int) -> None:
        if length > self.max_len:
            raise ValueError(f"sequence of {length} tokens exceeds the context length {self.max_len}")
        if length > self.capacity:
            capacity = self.capacity
            while capacity < length:
                capacity *= 2
            self._allocate(self.num_slots, min(capacity, self.max_len))

    @property
    def num_free_slots(self) -> int:
        return len(self.free_slots)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)
