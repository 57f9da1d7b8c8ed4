"""Per-request speculation metrics (`--per-request-spec-metrics`), as vLLM reports them per request.

`PerRequestSpecMetrics` observes each engine step on the engine thread: which chain and K the
router chose for each row, and how many tokens the first level proposed at each draft position.
When a request finishes, `report` joins that with the engine's own `SpecStats` (drafts,
accepted tokens, the accepted-length histogram) into the `spec_decode` object of its choice.

Terms (vLLM's): a *draft* is a step that proposed at least one token; *mean acceptance length*
is 1 + accepted tokens per draft (the bonus token counted); the *draft acceptance rate* is
accepted / proposed tokens; acceptance by position p is P(position p accepted | proposed).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field

from engine import Decision, Engine, RequestOutput
from engine.sequence import SpecStats

MODES = ("none", "summary", "detailed")


@dataclass
class _RequestRecord:
    decisions: collections.Counter = field(default_factory=collections.Counter)   # Decision (plain as one) -> steps
    num_proposed_at: list[int] = field(default_factory=list)                      # position -> drafts reaching it


class PerRequestSpecMetrics:
    """Args:
        mode: 'summary' or 'detailed' (detailed adds the histogram and acceptance by position).
        max_requests: records kept at most (the oldest go first), so an unread record cannot pile up.
    """

    def __init__(self, mode: str = "summary", max_requests: int = 4096):
        if mode not in MODES[1:]:
            raise ValueError(f"per-request spec metrics mode must be one of {MODES[1:]}, got {mode!r}")
        self.mode = mode
        self.max_requests = max_requests
        self._records: collections.OrderedDict[str, _RequestRecord] = collections.OrderedDict()
        self._lock = threading.Lock()

    # ---- engine thread ------------------------------------------------------------------------
    def observe_step(self, engine: Engine, outputs: list[RequestOutput]) -> None:
        step = engine.last_step
        with self._lock:
            for request_id, decision, result in zip(step.request_ids, step.decisions, step.results):
                record = self._records.get(request_id)
                if record is None:
                    record = self._records[request_id] = _RequestRecord()
                    if len(self._records) > self.max_requests:
                        self._records.popitem(last=False)
                record.decisions[Decision() if decision.is_plain else decision] += 1
                proposed = record.num_proposed_at
                proposed.extend([0] * (result.num_proposed - len(proposed)))
                for position in range(result.num_proposed):
                    proposed[position] += 1

    def observe_removed(self, request_id: str) -> None:
        with self._lock:
            self._records.pop(request_id, None)

    # ---- HTTP side ----------------------------------------------------------------------------
    def report(self, request_id: str, stats: SpecStats) -> dict:
        """The finished request's metrics (its record is dropped)."""
        with self._lock:
            record = self._records.pop(request_id, None) or _RequestRecord()
        top = record.decisions.most_common(1)[0][0] if record.decisions else Decision()
        body = {"num_steps": stats.num_steps, "num_drafts": stats.num_drafts,
                "num_draft_tokens": stats.num_draft_tokens, "num_accepted_tokens": stats.num_accepted_tokens,
                "mean_acceptance_length": 1 + stats.num_accepted_tokens / stats.num_drafts if stats.num_drafts else 1.0,
                "draft_acceptance_rate": stats.acceptance_rate, "chain": top.chain_label, "k": top.k,
                "decisions": {d.label: n for d, n in sorted(record.decisions.items(), key=lambda item: item[0].label)}}
        if self.mode == "detailed":
            histogram = list(stats.accepted_histogram)
            body["accepted_histogram"] = histogram
            body["acceptance_by_position"] = [
                sum(histogram[p + 1:]) / proposed if proposed else 0.0
                for p, proposed in enumerate(record.num_proposed_at)]
        return body
