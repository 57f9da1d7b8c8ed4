"""Why (or where) a 3-level chain can win: the cost model's answer on the measured profile.

A 3-level chain [ngram, draft, target] pays the draft's verify forward on top of the target's and
wins only if the draft filters the n-gram proposals well (high ngram>draft acceptance) and its
survivors are what the target would say (high draft>target acceptance). The benchmark measures
one point of that plane (the trained draft, the calibrated acceptance); this table shows the
cost model's best 3-level goodput over the best 2-level one across the plane, at batch 1 and the
benchmark's mean context, so the report says with numbers how far the draft is from a 3-level win.
"""

from __future__ import annotations

from collections.abc import Mapping

from cli.results import markdown_table
from engine.cost_model import CostModel

GRID = (0.2, 0.4, 0.6, 0.8)
DRAFT_PAIR, NGRAM_DRAFT_PAIR = "draft>target", "ngram>draft"


def three_level_plane(cost_model: CostModel, acceptance: Mapping[str, float], context: float,
                      batch: int = 1, grid: tuple[float, ...] = GRID) -> dict | None:
    """{"rows": draft>target values, "columns": ngram>draft values, "ratio": [[best 3-level goodput /
    best 2-level goodput]], "measured": {...}}; None when the cost model has no 3-level decision."""
    decisions = cost_model.decisions
    three = [i for i, d in enumerate(decisions) if len(d.chain) >= 3]
    two = [i for i, d in enumerate(decisions) if len(d.chain) == 2]
    if not three or not two:
        return None
    measured = {key: float(acceptance[key]) for key in (DRAFT_PAIR, NGRAM_DRAFT_PAIR) if key in acceptance}
    rows = [measured.get(DRAFT_PAIR), *grid] if DRAFT_PAIR in measured else list(grid)
    columns = [measured.get(NGRAM_DRAFT_PAIR), *grid] if NGRAM_DRAFT_PAIR in measured else list(grid)

    def ratio(a_draft: float, a_ngram_draft: float) -> tuple[float, str, str]:
        rates = {**acceptance, DRAFT_PAIR: a_draft, NGRAM_DRAFT_PAIR: a_ngram_draft}
        estimates = cost_model.evaluate(batch, context, rates)
        best3 = max((estimates[i] for i in three), key=lambda e: e.goodput)
        best2 = max((estimates[i] for i in two), key=lambda e: e.goodput)
        return best3.goodput / best2.goodput, best3.decision.label, best2.decision.label

    cells = [[ratio(a, b) for b in columns] for a in rows]
    return dict(batch=batch, context=context, measured=measured, rows=rows, columns=columns,
                ratio=[[c[0] for c in row] for row in cells],
                best_three=[[c[1] for c in row] for row in cells], best_two=[[c[2] for c in row] for row in cells])


def render_plane(plane: dict) -> list[str]:
    """Markdown lines: the ratio table, measured row and column marked."""
    measured = plane["measured"]

    def label(value: float, key: str) -> str:
        return f"{value:.2f} (measured)" if key in measured and value == measured[key] else f"{value:.2f}"

    header = ["draft>target \\ ngram>draft", *[label(v, NGRAM_DRAFT_PAIR) for v in plane["columns"]]]
    body = [[label(a, DRAFT_PAIR), *[f"{r:.2f}x" for r in row]] for a, row in zip(plane["rows"], plane["ratio"])]
    first = plane["best_three"][0][0], plane["best_two"][0][0]
    return [f"Cost model (profile of this machine), batch {plane['batch']}, context {plane['context']:.0f}: best "
            "3-level goodput / best 2-level goodput as the two acceptances of the draft vary (other pairs at "
            f"their calibrated values; at the measured point the best are {first[0]} and {first[1]}):", "",
            markdown_table(header, body), ""]
