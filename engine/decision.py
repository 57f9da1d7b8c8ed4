"""A routing decision: which chain of the ladder runs and how many tokens its first level drafts."""

from __future__ import annotations

from dataclasses import dataclass

TARGET = "target"


@dataclass(frozen=True)
class Decision:
    """`chain` is ordered from the cheapest level to the target; K = 0 means plain decoding."""

    chain: tuple[str, ...] = (TARGET,)
    k: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.chain, str):
            object.__setattr__(self, "chain", tuple(part.strip() for part in self.chain.split(",")))
        else:
            object.__setattr__(self, "chain", tuple(self.chain))
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise ValueError(f"draft length K must be an integer >= 0, got {self.k!r}")
        if not self.chain or self.chain[-1] != TARGET:
            raise ValueError(f"a chain must end at '{TARGET}', got {','.join(self.chain) or 'nothing'}")
        if len(set(self.chain)) != len(self.chain):
            raise ValueError(f"a chain may use each level once, got {','.join(self.chain)}")

    @property
    def is_plain(self) -> bool:
        return self.k == 0 or len(self.chain) == 1

    @property
    def label(self) -> str:
        return "plain" if self.is_plain else f"{'>'.join(self.chain)}@k{self.k}"


class StaticRouter:
    """Always the same decision (a baseline, and the engine's default)."""

    def __init__(self, decision: Decision):
        self.decision = decision

    def decide(self, engine) -> Decision:
        return self.decision
