"""What a level's catch-up costs a decision, amortised over the row's remaining output.

A model level below the target that has not yet seen a row's prompt, or sat out its recent
steps, first feeds what its cache lacks (engine/levels.py: lazy catch-up). That is paid once and
buys every later step of the row on that level, so it is amortised over the row's remaining
output (at most `CATCH_UP_HORIZON` tokens): given the rows (`catch_up_rates`, from the view's
cached lengths), a decision's step time gains, per level of its chain, E[tokens] x sum over rows
of catch-up seconds / remaining tokens. On a 1,500-token RAG prompt with 32 tokens to go, the
int4 copy's prefill (~2 s) costs more per token than it saves (bench_chains: int4>target ran at
0.60x plain there). The target prefills for every decision alike and is not charged.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.decision import TARGET
from engine.profile import LatencyProfile

CATCH_UP_HORIZON = 256      # the most output tokens a level's catch-up is amortised over


def remaining_output(max_tokens: int, num_output_tokens: int, horizon: int = CATCH_UP_HORIZON) -> int:
    """The output tokens a row's catch-up is amortised over: what is left of max_tokens, at most `horizon`."""
    return max(1, min(max_tokens - num_output_tokens, horizon))


def catch_up_rates(profile: LatencyProfile, rows: Sequence, horizon: int = CATCH_UP_HORIZON) -> list[dict[str, float]]:
    """Per row (`engine.batch_view.RowView`s), per model level below the target: seconds of that
    level's catch-up / the row's remaining output tokens. A row whose view holds no cached
    lengths (an offline view) is charged nothing."""
    forward_time, levels = profile.forward_time, profile.levels
    rates = []
    for row in rows:
        remaining = remaining_output(row.max_tokens, row.num_output_tokens, horizon)
        mine = {}
        for name, have in row.cached:
            pending = row.lacking(name)
            if pending and name != TARGET and name in levels and levels[name].kind == "model":
                mine[name] = forward_time(name, 1, pending, have) / remaining
        rates.append(mine)
    return rates
