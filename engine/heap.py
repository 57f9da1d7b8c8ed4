"""Giving freed memory back to the OS (glibc's malloc_trim; a no-op elsewhere).

Tensors below glibc's mmap threshold (which rises to the largest block freed, up to 32 MB) live
in its heap, where freed ones stay as holes that count in RSS until trimmed: re-laid weights
and resized KV caches leave tens to hundreds of MB. Trimming takes about a millisecond, so it
is called after those rare events, not per forward.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def return_freed_memory() -> None:
    """Release the free pages of the C heap to the OS."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
