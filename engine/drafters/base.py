"""The drafter interface shared by model-free proposers (n-gram, suffix) and model levels."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence


class ModelFreeDrafter(ABC):
    """Proposes tokens from text already seen, with no forward pass.

    Deterministic: its proposal distribution is one-hot, so verification accepts a token x
    with probability p(x). It can only be the first level of a chain.
    """

    name: str = "model-free"

    @abstractmethod
    def propose(self, request_id: str, context: Sequence[int], k: int) -> list[int]:
        """Up to `k` tokens that may follow `context` (prompt + committed output)."""

    def finish(self, request_id: str, output: Sequence[int]) -> None:
        """Called once when a request ends (finished or aborted); drop per-request state."""
