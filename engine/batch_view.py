"""What a router sees: a read-only picture of one step's batch, and the router protocol.

Routers never reach into the engine. Before each step the engine admits waiting requests and
hands its router a `BatchView`: the running rows (one `Decision` comes back per row, in this
order), the queue, the acceptance trackers' snapshot and the latency profile. Everything in it
is a copy, so a router that keeps a view keeps a picture of that step, whatever the engine does
next. A caller that drives the engine itself (the environment) passes its decision to
`Engine.step(decisions=...)` instead. After each step that ran a batch, a router that defines
`observe_feedback(feedback)` is handed a `StepFeedback`: what ran and how long it took, nothing more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from engine.decision import Decision
from engine.sequence import Request


@dataclass(frozen=True)
class RowView:
    """One request as a router may read it."""

    request_id: str
    category: str
    num_tokens: int                 # prompt + committed output
    num_output_tokens: int
    max_tokens: int
    arrival_time: float
    signals: tuple[tuple[str, int], ...] = ()    # (model-free drafter, its draft signal for this step)
    # (model level, tokens its KV cache holds for the row): a level that sat out, or has not yet
    # prefilled the prompt, catches up before it drafts or verifies; empty where unknown
    cached: tuple[tuple[str, int], ...] = ()

    def lacking(self, level: str) -> int | None:
        """Tokens `level`'s cache lacks beyond what the step's own forward feeds (the last
        committed token): what its catch-up would feed first; None where the view does not say."""
        have = dict(self.cached).get(level)
        return None if have is None else max(0, self.num_tokens - have - 1)

    @classmethod
    def of(cls, request: Request, signals: Mapping[str, int] | None = None,
           cached: Mapping[str, int] | None = None) -> RowView:
        return cls(request.request_id, request.category, request.num_tokens, len(request.output_token_ids),
                   request.params.max_tokens, request.arrival_time, tuple(sorted((signals or {}).items())),
                   tuple(sorted((cached or {}).items())))


def row_views(requests: Sequence[Request], signals: Sequence[Mapping[str, int] | None] | None = None,
              cached: Sequence[Mapping[str, int] | None] | None = None) -> tuple[RowView, ...]:
    """`requests` as routers read them: row i with draft signals `signals[i]` and cached lengths
    `cached[i]` where given (None, or no list at all: the view does not say)."""
    signals = signals or [None] * len(requests)
    cached = cached or [None] * len(requests)
    return tuple(RowView.of(r, s, c) for r, s, c in zip(requests, signals, cached))


@dataclass(frozen=True)
class BatchView:
    """Args:
        rows: the running batch, in the order the step's decisions must follow.
        waiting: the queue, oldest first.
        acceptance: the trackers' snapshot (`engine.trackers.AcceptanceTrackers.snapshot`).
        profile: the engine's latency profile (`engine.profile.LatencyProfile`), or None.
        max_model_len: the engine's context length.
    """

    rows: tuple[RowView, ...]
    waiting: tuple[RowView, ...]
    acceptance: Mapping
    profile: object = None
    max_model_len: int = 0

    @classmethod
    def of(cls, running: Sequence[Request], waiting: Sequence[Request], acceptance: Mapping,
           profile=None, max_model_len: int = 0, signals: Sequence[Mapping[str, int]] | None = None,
           cached: Sequence[Mapping[str, int]] | None = None) -> BatchView:
        return cls(row_views(running, signals, cached), row_views(waiting), acceptance, profile, max_model_len)

    @property
    def batch_size(self) -> int:
        return len(self.rows)

    @property
    def request_ids(self) -> list[str]:
        return [row.request_id for row in self.rows]

    @property
    def mean_context(self) -> float:
        """Mean prompt + output tokens of the running rows (0 for an empty batch)."""
        return sum(row.num_tokens for row in self.rows) / len(self.rows) if self.rows else 0.0

    def pair_acceptance(self, key: str) -> float:
        """The pooled acceptance of a 'drafter>verifier' pair (the trackers' prior before it has run)."""
        entry = self.acceptance.get("pairs", {}).get(key)
        return float(entry["acceptance"]) if entry is not None else float(self.acceptance.get("prior", 0.5))


@dataclass(frozen=True)
class StepFeedback:
    """What a router may learn from a step that ran: each row's decision, the step's seconds (the
    engine's clock; the simulator's modelled latency) and each row's committed tokens."""

    decisions: tuple[Decision, ...]
    latency_s: float
    num_committed: tuple[int, ...]

    @property
    def batch_size(self) -> int:
        return len(self.decisions)


@runtime_checkable
class Router(Protocol):
    """`decide(view)` returns one Decision per row of `view.rows`, in order; `observe_feedback(feedback)`
    (optional, not part of the runtime check) hears how each step went."""

    def decide(self, view: BatchView) -> list[Decision]: ...
