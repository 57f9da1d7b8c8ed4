"""Stopping a draft inside the step: what a p_min threshold is expected to do to a chain.

A model first level drafting with threshold tau (`Decision.p_min`) stops a row at the first
token whose top-1 probability ("confidence") under it is below tau and drops that token
(llama.cpp's --draft-p-min; DISCO, SpecDec++ and AdaEDL learn the same stop). Two numbers per
pair say what that does, both read off the confidence histogram the trackers keep
(`ConfidenceHistogram`):

    c(tau) = P(confidence >= tau)                   a drafted position is proposed
    a(tau) = P(accepted | confidence >= tau)         and then accepted

Model. Positions are independent with these rates, so a row's proposal length L with K drafts
has P(L >= m) = c^m (m <= K), and the first verifier accepts j or more tokens with probability
(c a)^j: E[tokens out] = 1 + sum_{j=1..K} (c a)^j, the usual f(a, K) at acceptance c a. Deeper
chains carry the distribution of L through `engine.expectation.chain_expected_tokens`.

Forwards. A row that proposes L < K tokens ran L + 1 draft forwards (the last one computed the
distribution that stopped it); L = K ran K. Forward j (0-based) of a batch runs when some row
with K > j has L >= j: P = 1 - prod_rows (1 - c_row^j), which `draft_forward_odds` returns for
the step-time model to charge. With tau = 0 (or c = 1) every number is today's.

Neutral prior: before a pair has drafted tokens the histogram is empty and a threshold is
predicted to change nothing (c = 1, a = the pair's acceptance); it is chosen once measured.
The histogram's own acceptance enters as a lift, a(tau) = a_row * A(tau) / A(0), so a row's own
acceptance estimate (engine/trackers.py) keeps its say and tau = 0 gives exactly a_row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

NUM_BINS = 10                       # confidence bins of width 0.1
STOP_P_MINS = (0.5, 0.8)            # the thresholds the cost model and the env's STOP_ACTIONS offer


def confidence_bin(confidence: float) -> int:
    return min(max(int(confidence * NUM_BINS), 0), NUM_BINS - 1)


@dataclass
class ConfidenceHistogram:
    """Per confidence bin: tokens drafted (proposed, or the one that stopped a draft), judged
    (up to and including the first rejection; later ones are censored) and accepted."""

    drafted: list[int] = field(default_factory=lambda: [0] * NUM_BINS)
    judged: list[int] = field(default_factory=lambda: [0] * NUM_BINS)
    accepted: list[int] = field(default_factory=lambda: [0] * NUM_BINS)

    def observe(self, confidences: Sequence[float], num_proposed: int, num_accepted: int) -> None:
        """One row's first pair: `confidences` of its proposed tokens, then (when drafting
        stopped early) the stopping token's; the verifier accepted `num_accepted`."""
        for j, confidence in enumerate(confidences):
            b = confidence_bin(confidence)
            self.drafted[b] += 1
            if j < num_proposed and j <= num_accepted:
                self.judged[b] += 1
                self.accepted[b] += j < num_accepted

    @property
    def num_drafted(self) -> int:
        return sum(self.drafted)

    def to_dict(self) -> dict:
        return {"drafted": list(self.drafted), "judged": list(self.judged), "accepted": list(self.accepted)}

    @classmethod
    def from_dict(cls, data: Mapping | None) -> ConfidenceHistogram:
        data = data or {}
        return cls(*(list(data.get(name, [0] * NUM_BINS)) for name in ("drafted", "judged", "accepted")))


def _above(counts: Sequence[float], tau: float) -> float:
    """Counts at confidence >= tau, the bin holding tau taken in proportion (uniform within it)."""
    if tau <= 0:
        return float(sum(counts))
    b = confidence_bin(tau)
    share = (b + 1 - tau * NUM_BINS)                # of bin b, the part at or above tau
    return share * counts[b] + sum(counts[b + 1:])


def stop_rates(histogram: Mapping | ConfidenceHistogram | None, tau: float) -> tuple[float, float]:
    """(c, lift) at threshold tau: P(confidence >= tau) and A(tau) / A(0) (see the module doc);
    (1, 1) when tau = 0 or nothing has been measured."""
    if not tau or histogram is None:
        return 1.0, 1.0
    h = histogram if isinstance(histogram, ConfidenceHistogram) else ConfidenceHistogram.from_dict(histogram)
    drafted = float(sum(h.drafted))
    if not drafted:
        return 1.0, 1.0
    c = _above(h.drafted, tau) / drafted
    judged, judged_all = _above(h.judged, tau), float(sum(h.judged))
    if not judged or not sum(h.accepted):
        return c, 1.0
    return c, (_above(h.accepted, tau) / judged) / (sum(h.accepted) / judged_all)


def initial_lengths(k: int, c: float) -> list[float]:
    """P(L = m), m = 0..K, of a first level that drafts K tokens and goes on with probability c."""
    if c >= 1.0:
        return [0.0] * k + [1.0]
    return [c ** m * (1.0 - c) for m in range(k)] + [c ** k]


def draft_forward_odds(ks: Sequence[int], cs: Sequence[float], counts: Sequence[int] | None = None) -> list[float]:
    """P(draft forward j runs) for j = 0..max(K) - 1, rows drafting K[i] at continuation c[i]
    (`counts[i]` rows alike, default 1)."""
    counts = counts or [1] * len(ks)
    odds = []
    for j in range(max(ks, default=0)):
        idle = 1.0
        for k, c, n in zip(ks, cs, counts):
            if k > j:
                idle *= (1.0 - (c ** j if c < 1.0 else 1.0)) ** n
        odds.append(1.0 - idle)
    return odds


def decision_stop_rates(decisions: Sequence, acceptance: Mapping) -> list[tuple[float, float]]:
    """(c, lift) of every decision's first pair from a trackers snapshot's "confidence"
    histograms ((1, 1) without a threshold or a histogram)."""
    pairs = acceptance.get("pairs", {}) if "pairs" in acceptance else {}
    out = []
    for d in decisions:
        key = f"{d.chain[0]}>{d.chain[1]}" if d.p_min and len(d.chain) > 1 else None
        out.append(stop_rates((pairs.get(key) or {}).get("confidence"), d.p_min) if key else (1.0, 1.0))
    return out
