"""KVCache memory follows the longest live row: block-rounded growth, shrinking once a long row
leaves, slots doubling, and the contents of live rows kept across every resize."""

from __future__ import annotations

import pytest
import torch

from engine.kv_cache import KVCache

LAYERS, HEADS, DIM = 3, 2, 4


def make_cache(max_len: int = 1024, **kwargs) -> KVCache:
    kwargs.setdefault("initial_len", 64)
    kwargs.setdefault("block_len", 32)
    return KVCache(LAYERS, HEADS, DIM, max_len, **kwargs)


def write(cache: KVCache, slot: int, length: int, seed: int) -> list[torch.Tensor]:
    """Fill `slot` with `length` random positions in every layer (as the runner would) and
    return what was written: [layer][k|v] -> [heads, length, dim]."""
    cache.ensure_capacity(length)
    generator = torch.Generator().manual_seed(seed)
    written = []
    for tensors in (cache.keys, cache.values):
        for layer in tensors:
            data = torch.randn(HEADS, length, DIM, generator=generator)
            layer[slot, :, :length] = data
            written.append(data)
    cache.lengths[slot] = length
    return written


def assert_holds(cache: KVCache, slot: int, written: list[torch.Tensor]) -> None:
    length = cache.lengths[slot]
    stored = [layer[slot, :, :length] for layer in cache.keys + cache.values]
    assert all(torch.equal(a, b[:, :length]) for a, b in zip(stored, written)), f"slot {slot} lost its contents"


def test_growth_rounds_up_to_a_block_and_by_at_least_a_quarter():
    cache = make_cache()
    assert cache.capacity == 64
    cache.ensure_capacity(64)
    assert cache.capacity == 64                        # fits: no copy
    cache.ensure_capacity(65)
    assert cache.capacity == 96                        # 64 * 1.25 = 80 -> a block of 32 above
    cache.ensure_capacity(300)
    assert cache.capacity == 320                       # the need, rounded up to a block
    cache.ensure_capacity(330)
    assert cache.capacity == 416                       # 320 * 1.25 = 400 -> 416
    cache.ensure_capacity(1000)
    assert cache.capacity == 1024 == cache.max_len     # capped at the context length
    assert cache.nbytes() == 2 * LAYERS * cache.num_slots * HEADS * 1024 * DIM * 4


def test_contents_survive_growth_of_capacity_and_slots_and_shrinking():
    cache = make_cache()
    slots = [cache.allocate_slot() for _ in range(3)]  # 1 -> 2 -> 4 slots
    assert cache.num_slots == 4
    held = {slot: write(cache, slot, length, seed=slot) for slot, length in zip(slots, [40, 10, 60])}
    long = cache.allocate_slot()
    held[long] = write(cache, long, 700, seed=9)       # grows the capacity
    assert cache.capacity >= 700
    for slot, data in held.items():
        assert_holds(cache, slot, data)
    more = [cache.allocate_slot() for _ in range(2)]   # 4 -> 8 slots at the grown capacity
    assert cache.num_slots == 8 and all(cache.lengths[s] == 0 for s in more)
    for slot, data in held.items():
        assert_holds(cache, slot, data)
    cache.free_slot(long)                              # the long row leaves: shrink
    del held[long]
    assert cache.capacity < 700
    for slot, data in held.items():
        assert_holds(cache, slot, data)
    cache.rollback(slots[2], 25)                       # a rolled-back row keeps its prefix
    assert_holds(cache, slots[2], held[slots[2]])


def test_capacity_follows_the_longest_live_row_with_hysteresis():
    cache = make_cache()
    short, middle, long = (cache.allocate_slot() for _ in range(3))
    write(cache, short, 50, seed=1)
    write(cache, middle, 200, seed=2)
    write(cache, long, 900, seed=3)
    assert cache.capacity == 928
    cache.free_slot(long)
    assert 200 <= cache.capacity <= 256                 # 200 * 1.25 = 250 -> 256
    assert cache.nbytes() == 2 * LAYERS * cache.num_slots * HEADS * cache.capacity * DIM * 4
    write(cache, middle, 230, seed=4)                  # within the headroom: no copy
    assert cache.capacity == 256
    cache.rollback(middle, 129)
    cache.free_slot(short)                             # 129 > 256 / 2: not worth a copy
    assert cache.capacity == 256
    cache.rollback(middle, 100)
    assert cache.shrink_to_fit() and cache.capacity == 128
    cache.free_slot(middle)                            # nothing live: back to the initial size
    assert cache.capacity == 64 and cache.num_free_slots == cache.num_slots
    assert not cache.shrink_to_fit()


def test_errors_are_unchanged():
    cache = make_cache(max_len=100)
    slot = cache.allocate_slot()
    with pytest.raises(ValueError, match="sequence of 101 tokens exceeds the context length 100"):
        cache.ensure_capacity(101)
    write(cache, slot, 3, seed=0)
    with pytest.raises(ValueError, match="cannot roll slot 0 back to 4: it holds 3"):
        cache.rollback(slot, 4)
    cache.free_slot(slot)
    with pytest.raises(ValueError, match="slot 0 is already free"):
        cache.free_slot(slot)
    with pytest.raises(ValueError, match="block_len must be >= 1"):
        make_cache(block_len=0)
