"""The expectation model: how many tokens one speculative step is expected to commit.

Tokens. A drafter proposing K tokens to a verifier that accepts each with probability a (until
the first rejection) gives the verifier's output: the accepted prefix plus one token of its own,
expected f(a, K) = (1 - a^(K+1)) / (1 - a) tokens (K + 1 as a -> 1; Leviathan et al., arXiv
2211.17192). A chain [L0, L1, ..., Ln = target] composes this level by level: the levels below
Li form one composite drafter whose proposal length M(i-1) is random, with L0's M(0) = K.
Li accepts j of M(i-1) tokens with P(j) = a^j (1 - a) for j < M(i-1), P(M(i-1)) = a^M(i-1),
where a is the "L(i-1)>Li" acceptance, and outputs M(i) = j + 1. We carry the whole
distribution of M(i) (support 1..K+1), so the expectation is exact under the model; a
2-level chain reduces to f(a, K). Expected committed tokens per row = E[M(n)]; plain = 1.
A draft stopped inside the step by a p_min threshold makes M(0) random too: P(M(0) >= m) = c^m,
with the first pair's acceptance scaled by the threshold's lift (engine/draft_stop.py).

Acceptance comes as the trackers' snapshot ({"pairs": {"a>b": {"acceptance": ...}}, "prior": p})
or a flat {"a>b": acceptance}; a pair missing from it gets the snapshot's prior, else
`prior_acceptance`.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.draft_stop import initial_lengths


def expected_output(acceptance: float, k: int) -> float:
    """Expected tokens out of a verifier given K proposals: (1 - a^(K+1)) / (1 - a)."""
    a = min(max(acceptance, 0.0), 1.0)
    if a > 1 - 1e-9:
        return k + 1.0
    return (1.0 - a ** (k + 1)) / (1.0 - a)


def verify_distribution(lengths: list[float], a: float) -> list[float]:
    """P(M_out = m) for m = 0..len, given P(M_in = m) at index m and per-token acceptance a:
    M_out = j + 1 with probability a^j ((1 - a) P(M_in > j) + P(M_in = j))."""
    powers = [1.0]
    for _ in range(len(lengths) - 1):
        powers.append(powers[-1] * a)
    out = [0.0] * (len(lengths) + 1)
    above = 0.0                                     # P(M_in > j)
    for j in range(len(lengths) - 1, -1, -1):
        out[j + 1] = powers[j] * ((1.0 - a) * above + lengths[j])
        above += lengths[j]
    return out


def chain_expected_tokens(pairs: tuple[str, ...], k: int, rates: Mapping[str, float], prior: float,
                          stop: tuple[float, float] = (1.0, 1.0)) -> float:
    """Expected committed tokens per row of a chain whose consecutive pairs are `pairs`
    ("drafter>verifier" keys, cheapest first) with K drafts; 1 for plain decoding (no pairs).
    A pair missing from `rates` has acceptance `prior`. `stop` = (c, lift) of a p_min threshold
    (`engine.draft_stop.stop_rates`): the first level goes on with probability c per token and
    its pair's acceptance is multiplied by lift; (1, 1) drafts all K."""
    if not pairs:
        return 1.0
    c, lift = stop
    first = min(rates.get(pairs[0], prior) * lift, 1.0)
    if len(pairs) == 1:
        return expected_output(c * first, k)        # 1 + sum_{j=1..K} (c a)^j
    lengths = initial_lengths(k, c)                 # M(0) = K with certainty when c = 1
    for i, key in enumerate(pairs):
        lengths = verify_distribution(lengths, min(max(first if i == 0 else rates.get(key, prior), 0.0), 1.0))
    return sum(m * p for m, p in enumerate(lengths))


def acceptance_rates(acceptance: Mapping) -> tuple[dict[str, float], float | None]:
    """(pair -> acceptance, prior or None) from a trackers snapshot or a flat mapping."""
    if "pairs" in acceptance:
        rates = {key: float(value["acceptance"]) for key, value in acceptance["pairs"].items()}
        return rates, acceptance.get("prior")
    return {key: float(value) for key, value in acceptance.items()}, None
