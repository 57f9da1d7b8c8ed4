"""Every decision's expected tokens for every row group, in one array pass (the router's hot path).

The cost model scores a batch row group by row group (each request's own acceptance) and chain by
chain; a batch of 16 x 34 decisions as scalar calls took 3.4 ms a step. Here the groups' acceptance
is one matrix [group, pair] and chains of one length are scored together
(`engine.expectation.expected_tokens_columns`): the same figures to rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from engine.expectation import expected_tokens_columns


class ChainTable:
    """Args:
        plans: per decision, (its consecutive pair keys, K); () for plain decoding.
    """

    def __init__(self, plans: Sequence[tuple[tuple[str, ...], int]]):
        self.num_decisions = len(plans)
        self.pair_keys = list(dict.fromkeys(key for pairs, _ in plans for key in pairs))
        column = {key: j for j, key in enumerate(self.pair_keys)}
        by_length: dict[int, list[int]] = {}
        for i, (pairs, _) in enumerate(plans):
            if pairs:
                by_length.setdefault(len(pairs), []).append(i)
        # per chain length: (decision indices, per pair position the columns, their K)
        self.groups = [(idx, [[column[plans[i][0][n]] for i in idx] for n in range(length)],
                        np.array([plans[i][1] for i in idx])) for length, idx in sorted(by_length.items())]

    def tokens(self, groups: Sequence[Mapping[str, float]], prior: float, stops) -> np.ndarray:
        """Expected tokens per row of every decision for every row group: [G, D] (1 for plain).
        `groups`: each group's pair -> acceptance (missing: `prior`); `stops`: (c, lift) per decision."""
        rates = np.array([[merged.get(key, prior) for key in self.pair_keys] for merged in groups],
                         dtype=np.float64).reshape(len(groups), len(self.pair_keys))      # [G, P]
        table = np.ones((len(groups), self.num_decisions))
        for idx, cols, ks in self.groups:
            c, lift = (np.array([stops[i][n] for i in idx]) for n in (0, 1))
            table[:, idx] = expected_tokens_columns(ks, [rates[:, position] for position in cols], (c, lift))
        return table
