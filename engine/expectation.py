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

from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

from engine.draft_stop import initial_lengths


def _unit(x) -> np.ndarray:
    return np.minimum(np.maximum(x, 0.0), 1.0)


def expected_output(acceptance, k):
    """Expected tokens out of a verifier given K proposals: (1 - a^(K+1)) / (1 - a). Elementwise
    on arrays of acceptance (and K), so the cost model scores every row group at once."""
    a = _unit(np.asarray(acceptance, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(a > 1 - 1e-9, np.asarray(k, dtype=np.float64) + 1.0, (1.0 - a ** (np.asarray(k) + 1)) / (1.0 - a))
    return float(out) if out.ndim == 0 else out


def verify_distribution(lengths: np.ndarray, a: np.ndarray) -> np.ndarray:
    """P(M_out = m) for m = 0..L, given P(M_in = m) at [..., m] ([..., L]: leading axes for row
    groups and chains, broadcast against a's) and per-token acceptance a [...]: M_out = j + 1 with
    probability a^j ((1 - a) P(M_in > j) + P(M_in = j)). Ufuncs only: it runs on the router's path."""
    width = lengths.shape[-1]
    powers = a[..., None] ** np.arange(width)                                   # [..., L]
    above = lengths[..., ::-1].cumsum(axis=-1)[..., ::-1] - lengths             # P(M_in > j), [..., L]
    body = powers * ((1.0 - a)[..., None] * above + lengths)
    out = np.zeros(body.shape[:-1] + (width + 1,))
    out[..., 1:] = body
    return out


@lru_cache(maxsize=256)
def _initial_table(ks: tuple[int, ...], cs: tuple[float, ...]) -> np.ndarray:
    """[S, max K + 1]: `initial_lengths` of each (K, c), shorter ones padded with P = 0."""
    width = max(ks) + 1
    table = np.array([initial_lengths(k, c) + [0.0] * (width - 1 - k) for k, c in zip(ks, cs)])
    table.flags.writeable = False           # shared by every caller of the cache
    return table


def expected_tokens_columns(k, columns: Sequence[np.ndarray], stop=(1.0, 1.0)) -> np.ndarray:
    """Expected committed tokens per row of chains of len(columns) pairs: K drafts (an int, or
    [S]: one per chain, scored together), `columns[i]` the acceptance of each chain's i-th pair
    (cheapest first) per row group ([G], or [G, S]); ones for plain decoding (no columns).
    `stop` = (c, lift) of a p_min threshold (`engine.draft_stop.stop_rates`; scalars or [S]): the
    first level goes on with probability c per token and its pair's acceptance is multiplied by
    lift; (1, 1) drafts all K. Returns [G] (or [G, S])."""
    if not columns:
        return np.ones(1)
    c, lift = stop
    first = _unit(np.asarray(columns[0], dtype=np.float64) * lift)
    if len(columns) == 1:
        return np.atleast_1d(expected_output(c * first, k))          # 1 + sum_{j=1..K} (c a)^j
    ks, cs = np.broadcast_arrays(np.atleast_1d(k), np.atleast_1d(np.asarray(c, dtype=np.float64)))   # [S]
    one_chain = first.ndim == 1                 # [G]: one chain, scored as [G, 1]
    lengths = _initial_table(tuple(ks.tolist()), tuple(cs.tolist()))             # [S, K + 1]
    for i, column in enumerate(columns):
        a = first if i == 0 else _unit(np.asarray(column, dtype=np.float64))
        lengths = verify_distribution(lengths, a[:, None] if one_chain else a)    # [G, S, ...]
    tokens = lengths @ np.arange(lengths.shape[-1])                            # [G, S]
    return tokens[:, 0] if one_chain else tokens


def chain_expected_tokens(pairs: tuple[str, ...], k: int, rates: Mapping[str, float], prior: float,
                          stop: tuple[float, float] = (1.0, 1.0)) -> float:
    """Expected committed tokens per row of a chain whose consecutive pairs are `pairs`
    ("drafter>verifier" keys, cheapest first) with K drafts; 1 for plain decoding (no pairs).
    A pair missing from `rates` has acceptance `prior`. `stop`: see `expected_tokens_columns`."""
    columns = [np.array([rates.get(key, prior)], dtype=np.float64) for key in pairs]
    return float(expected_tokens_columns(k, columns, stop)[0])


def acceptance_rates(acceptance: Mapping) -> tuple[dict[str, float], float | None]:
    """(pair -> acceptance, prior or None) from a trackers snapshot or a flat mapping."""
    if "pairs" in acceptance:
        rates = {key: float(value["acceptance"]) for key, value in acceptance["pairs"].items()}
        return rates, acceptance.get("prior")
    return {key: float(value) for key, value in acceptance.items()}, None
