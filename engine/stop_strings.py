"""Stop strings, checked incrementally: each check scans only the text that is new since the last.

After every committed token the scheduler decodes the output and asks `find_stop` where the
first stop string starts. Text already scanned held no whole stop string (the request would
have stopped), so a new match must end in the new text: the scan starts `len(longest stop) - 1`
characters before it, and the cost per token is that window, not the whole output. Trailing
U+FFFD characters (half of a multi-byte character the next token completes) are not counted
as scanned: their text can still change.
"""

from __future__ import annotations

from collections.abc import Sequence

REPLACEMENT_CHAR = "\ufffd"


def find_stop(text: str, stop: Sequence[str], num_scanned: int) -> int | None:
    """Where the earliest stop string in `text` starts, or None; `text[:num_scanned]` is known to
    hold none (`num_stable_chars` of the text last scanned)."""
    start = max(0, num_scanned - (max(map(len, stop)) - 1))
    hits = [i for i in (text.find(s, start) for s in stop) if i >= 0]
    return min(hits) if hits else None


def num_stable_chars(text: str) -> int:
    """How much of `text` a later decode of more tokens keeps as it is: all but trailing U+FFFD."""
    return len(text.rstrip(REPLACEMENT_CHAR))
