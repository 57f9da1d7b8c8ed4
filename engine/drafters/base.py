"""The drafter interface shared by model-free proposers (n-gram, suffix) and model levels."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

SIGNAL_LENGTH = 8      # tokens a drafter is asked for when its proposal's quality is read
SIGNAL_LEVELS = 3      # a draft signal is an integer in 0..SIGNAL_LEVELS (0: nothing to propose)


def length_signal(num_proposed: int, length: int = SIGNAL_LENGTH) -> int:
    """A proposal's length as a draft signal: 0 none, 1 a third or less of `length`, 2 up to two
    thirds, 3 longer (a drafter that keeps finding confident continuations keeps proposing)."""
    if num_proposed <= 0:
        return 0
    return min(SIGNAL_LEVELS, 1 + (SIGNAL_LEVELS * (num_proposed - 1)) // max(length, 1))


class ModelFreeDrafter(ABC):
    """Proposes tokens from text already seen, with no forward pass.

    Deterministic: its proposal distribution is one-hot, so verification accepts a token x
    with probability p(x). It can only be the first level of a chain.
    """

    name: str = "model-free"

    @abstractmethod
    def propose(self, request_id: str, context: Sequence[int], k: int) -> list[int]:
        """Up to `k` tokens that may follow `context` (prompt + committed output): only as far
        as the drafter's evidence goes (its draft stops inside the step on its own, as a model
        level's does with `Decision.p_min`), so fewer, or none, is a normal answer."""

    def signal(self, request_id: str, context: Sequence[int]) -> int:
        """How promising this drafter's next proposal looks, in 0..SIGNAL_LEVELS, read before the
        step is routed (per-step draft quality, as SuffixDecoding and EAGLE-2 score drafts):
        by default the length of the proposal it would make (`length_signal`)."""
        return length_signal(len(self.propose(request_id, context, SIGNAL_LENGTH)))

    def finish(self, request_id: str, output: Sequence[int]) -> None:
        """Called once when a request ends (finished or aborted); drop per-request state."""
