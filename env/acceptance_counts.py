"""The counts an acceptance model is fitted from: per position accepts, per drafter proposal sizes.

A count is keyed by category, or by `signal_key(category, signal)` ("category|signal") for a
step whose first drafter showed a draft signal; POOLED ("*") stands for every category.
"""

from __future__ import annotations

from dataclasses import dataclass, field

POOLED = "*"
SIGNAL_SEP = "|"


def signal_key(category: str, signal: int | None) -> str:
    """The fitting key of a step whose first drafter showed `signal` (the category when None)."""
    return category if signal is None else f"{category}{SIGNAL_SEP}{signal}"


def split_key(key: str) -> tuple[str, str | None]:
    """(category, signal or None) of a fitting key."""
    category, sep, signal = key.partition(SIGNAL_SEP)
    return category, signal if sep else None


@dataclass
class PositionCounts:
    """Sufficient statistics of one acceptance curve."""

    trials: list[int] = field(default_factory=list)
    accepts: list[int] = field(default_factory=list)
    num_proposed_tokens: int = 0
    num_accepted_tokens: int = 0

    def observe(self, num_proposed: int, num_accepted: int) -> None:
        self.num_proposed_tokens += num_proposed
        self.num_accepted_tokens += num_accepted
        reached = min(num_accepted + 1, num_proposed)       # positions that were judged
        while len(self.trials) < reached:
            self.trials.append(0)
            self.accepts.append(0)
        for j in range(reached):
            self.trials[j] += 1
            self.accepts[j] += j < num_accepted

    def merged(self, other: PositionCounts) -> PositionCounts:
        n = max(len(self.trials), len(other.trials))
        pad = lambda xs: xs + [0] * (n - len(xs))
        return PositionCounts([a + b for a, b in zip(pad(self.trials), pad(other.trials))],
                              [a + b for a, b in zip(pad(self.accepts), pad(other.accepts))],
                              self.num_proposed_tokens + other.num_proposed_tokens,
                              self.num_accepted_tokens + other.num_accepted_tokens)

    @property
    def num_observed(self) -> int:
        return self.trials[0] if self.trials else 0


@dataclass
class ProposalCounts:
    """How often a model-free first level proposed nothing, all K, or part of K."""

    num_steps: int = 0
    num_nonempty: int = 0
    num_full: int = 0

    def observe(self, num_requested: int, num_proposed: int) -> None:
        self.num_steps += 1
        self.num_nonempty += num_proposed > 0
        self.num_full += num_proposed >= num_requested

    def merged(self, other: ProposalCounts) -> ProposalCounts:
        return ProposalCounts(self.num_steps + other.num_steps, self.num_nonempty + other.num_nonempty,
                              self.num_full + other.num_full)
