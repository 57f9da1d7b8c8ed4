"""The simulator's clock: the forwards one realized step runs, as calls of the latency profile.

`engine.cost_model.CostModel.step_time` is the expectation before a step; this is the charge
after it, per row and as `engine.spec_step.run_step` and the levels really run the forwards:
grouped by level (plain rows join the target's group), each group padded to its widest feed and
longest context, and a level feeds what its cache lacks first (prefill of a new request, lazy
catch-up of a level that sat out), long pending feeds in forwards of their own as
`engine.levels.plan_catch_up` plans them. A model drafter's catch-up and first forward, which
feed no proposal, form a group of their own (`ForwardGroup(level, is_drafting=True)`).
"""

from __future__ import annotations

from typing import NamedTuple

from engine.config import EngineConfig
from engine.decision import TARGET
from engine.levels import plan_catch_up
from engine.profile import LatencyProfile


class ForwardGroup(NamedTuple):
    """The rows one level runs in one forward: drafting (a model first level) or verifying."""

    level: str
    is_drafting: bool = False


def rows_forwards(profile: LatencyProfile, num_tokens: list[int], cached: list[dict[str, int]],
                  chain: tuple[str, ...], ks: list[int], results: list,
                  config: EngineConfig) -> list[tuple[str, int, int, int]]:
    """The (level, batch, tokens per row, context) calls of `profile.forward_time` of one step.

    `num_tokens[i]`: row i's committed tokens before the step; `cached[i]`: level -> tokens its
    cache holds for the row; `ks[i]`: the row's K after capping (0 = plain); `results[i]`: its
    RowResult (`pairs[j].num_proposed` is what level j + 1 was fed); `config`: the engine's
    catch-up threshold and token budget.
    """
    groups: dict[ForwardGroup, list[tuple[int, int, int]]] = {}   # -> [(pending, extra, cached)] per row
    drafting: list[tuple[int, int]] = []                # model first level: (committed tokens, k)
    model_free: list[int] = []                          # model-free first level: k per row
    first_is_model = profile.levels[chain[0]].kind == "model" if len(chain) > 1 else False
    for total, have_by_level, k, result in zip(num_tokens, cached, ks, results):
        if k > 0:
            if first_is_model:
                drafting.append((total, k))
                have = have_by_level.get(chain[0], 0)
                groups.setdefault(ForwardGroup(chain[0], is_drafting=True), []).append((total - have, 0, have))
            else:
                model_free.append(k)
            for pair, level in zip(result.pairs, chain[1:]):
                have = have_by_level.get(level, 0)
                groups.setdefault(ForwardGroup(level), []).append((total - have, pair.num_proposed, have))
        else:
            have = have_by_level.get(TARGET, 0)
            groups.setdefault(ForwardGroup(TARGET), []).append((total - have, 0, have))
    forwards = []
    for group, rows in groups.items():
        plan = plan_catch_up([p for p, _, _ in rows], [e for _, e, _ in rows], config.catch_up_threshold,
                             config.token_budget)
        for forward in plan.forwards:
            forwards.append((group.level, len(forward), max(n for _, _, n in forward),
                             max(rows[i][2] + start for i, start, _ in forward)))
        caught = set(plan.rows)
        fed = [(1 if i in caught else p) + e for i, (p, e, _) in enumerate(rows)]
        ends = [have + p + e for p, e, have in rows]
        forwards.append((group.level, len(rows), max(fed), max(ends) - max(fed)))
    if model_free:
        forwards.append((chain[0], len(model_free), max(model_free), max(num_tokens)))
    for j in range(1, max((k for _, k in drafting), default=0)):     # then one token per row until each has k
        ends = [total + j for total, k in drafting if k > j]
        forwards.append((chain[0], len(ends), 1, max(ends) - 1))
    return forwards

