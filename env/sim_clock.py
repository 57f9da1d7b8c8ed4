"""The simulator's clock: the forwards one realized step runs, as calls of the latency profile.

`engine.step_time.step_time` is the expectation before a step; this is the charge after it,
per row and as `engine.spec_step.run_step` and the levels really run the forwards: grouped as
`engine.step_time.group_forwards` groups them (by level and, for a verifier, its depth in the
row's chain; plain rows join the target's group), each group padded to its widest feed
and longest context, and a level feeds what its cache lacks first (prefill of a new request, lazy
catch-up of a level that sat out), long pending feeds in forwards of their own as
`engine.levels.plan_catch_up` plans them. A model drafter's catch-up and first forward, which
feed no proposal, form a group of their own (`ForwardGroup(level, is_drafting=True)`).
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.config import EngineConfig
from engine.levels import plan_catch_up
from engine.profile import LatencyProfile
from engine.step_time import ForwardGroup, group_forwards


def per_row_chains(chains: tuple[str, ...] | Sequence[tuple[str, ...]], num_rows: int) -> list[tuple[str, ...]]:
    """`chains` as one chain per row: a single chain (a tuple of level names) is every row's."""
    if not chains or isinstance(chains[0], str):
        return [tuple(chains)] * num_rows
    return list(chains)


def rows_forwards(profile: LatencyProfile, num_tokens: list[int], cached: list[dict[str, int]],
                  chains: tuple[str, ...] | Sequence[tuple[str, ...]], ks: list[int], results: list,
                  config: EngineConfig) -> list[tuple[str, int, int, int]]:
    """The (level, batch, tokens per row, context) calls of `profile.forward_time` of one step.

    `num_tokens[i]`: row i's committed tokens before the step; `cached[i]`: level -> tokens its
    cache holds for the row; `chains`: one chain for every row, or row i's chain at `chains[i]`
    (per-row routing: rows on different chains share each level's forward, as
    `engine.spec_step.run_step` groups them); `ks[i]`: the row's K after capping (0 = plain);
    `results[i]`: its RowResult (`pairs[j].num_proposed` is what level j + 1 was fed);
    `config`: the engine's catch-up threshold and token budget.
    """
    chains = per_row_chains(chains, len(num_tokens))
    step = group_forwards(profile, chains, ks)
    groups: dict[ForwardGroup, list[tuple[int, int, int]]] = {}   # -> [(pending, extra, cached)] per row
    for group, members in step.forwards.items():
        rows = groups[group] = []
        for row, position in members:
            have = cached[row].get(group.level, 0)
            extra = results[row].pairs[position - 1].num_proposed if position else 0
            rows.append((num_tokens[row] - have, extra, have))
    # model first level -> (committed tokens, draft forwards) per row: K, or L + 1 for a row that
    # proposed L < K tokens (a p_min threshold stopped it after computing the next distribution)
    drafting = {group.level: [(num_tokens[row], min(ks[row], results[row].pairs[0].num_proposed + 1))
                              for row, _ in members]
                for group, members in step.forwards.items() if group.is_drafting}
    forwards = []
    for group, rows in groups.items():
        plan = plan_catch_up([p for p, _, _ in rows], [e for _, e, _ in rows], config.catch_up_threshold,
                             config.token_budget)
        for forward in plan.forwards:
            forwards.append((group.level, len(forward), max(n for _, _, n in forward),
                             max(rows[i][2] + start for i, start, _ in forward)))
        caught = set(plan.rows)
        fed = [(1 if i in caught else p) + e for i, (p, e, _) in enumerate(rows)]
        starts = [have + (p - 1 if i in caught else 0) for i, (p, _, have) in enumerate(rows)]
        forwards.append((group.level, len(rows), max(fed), max(starts)))
    for name, rows in step.model_free.items():
        forwards.append((name, len(rows), max(ks[row] for row in rows), max(num_tokens[row] for row in rows)))
    for name, rows in drafting.items():
        for j in range(1, max(k for _, k in rows)):     # then one token per row until each has k
            ends = [total + j for total, k in rows if k > j]
            forwards.append((name, len(ends), 1, max(ends) - 1))
    return forwards
