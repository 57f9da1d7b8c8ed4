"""Steps in which no row has a proposal: a model-free chain's step is then a plain one.

A model-free drafter proposes only as far as its match goes, often nothing (about half the steps
on Spec-Bench), and a step none of whose rows has a proposal runs the target over one token. The
cost model prices a (model-free, target) chain at batch B as e^B x plain's step + (1 - e^B) x its
own, e the pair's share of empty proposals in the trackers (once they hold `MIN_EMPTY_EVIDENCE`
observations). Charging the full K+1 width made n-gram@4 look 1.45x dearer per step than plain at
one row on an EPYC Zen 3, where served it ran 1.09-1.17x faster than plain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.decision import Decision

MIN_EMPTY_EVIDENCE = 16         # observations of a pair before its empty share is used


def model_free_chains(decisions: Sequence[Decision], profile) -> list[tuple[int, str]]:
    """(index, pair) of the decisions whose model-free drafter proposes straight to the target."""
    return [(i, f"{d.chain[0]}>{d.chain[1]}") for i, d in enumerate(decisions)
            if len(d.chain) == 2 and profile.levels[d.chain[0]].kind == "model_free"]


def with_empty_steps(times: Sequence[float], batch: int, plain: int | None, chains: Sequence[tuple[int, str]],
                     acceptance: Mapping) -> Sequence[float]:
    """`times` (step seconds per decision) with each of `chains` a plain step (`times[plain]`) when
    no row of the batch has a proposal; `times` itself when nothing applies."""
    pairs = acceptance.get("pairs", {}) if "pairs" in acceptance else {}
    if plain is None or not chains or not pairs:
        return times
    times = list(times)             # a cached list stays as priced
    for i, key in chains:
        entry = pairs.get(key) or {}
        observed = entry.get("num_observed") or 0
        if observed >= MIN_EMPTY_EVIDENCE:
            none = (entry.get("num_empty", 0) / observed) ** batch
            times[i] = none * times[plain] + (1.0 - none) * times[i]
    return times
