"""bench_serving's summary: the fallback share of the learned runs and learned / cost-model goodput."""

from __future__ import annotations

import pytest

from bench.bench_serving import summarize_rows


def row(workload: str, router: str, goodput: float, learned: float = 0, fallback: float = 0) -> dict:
    by_source = {k: v for k, v in (("learned", learned), ("fallback", fallback)) if v}
    return {"workload": workload, "router": router, "routing": {"by_source": by_source},
            "report": {"goodput_rps": goodput}}


def test_summary_counts_fallbacks_of_learned_runs_only_and_takes_the_geometric_mean():
    rows = [row("a", "learned", 2.0, learned=97, fallback=3), row("a", "cost-model", 1.0, fallback=50),
            row("b", "learned", 1.0, learned=100), row("b", "cost-model", 2.0, fallback=80),
            row("c", "learned", 1.0, learned=100)]                       # no cost-model run: no ratio
    summary = summarize_rows(rows)
    assert summary["fallback_share"] == pytest.approx(3 / 300)
    assert summary["learned_x_cost_model_goodput"] == pytest.approx(1.0)
    assert summary["learned_x_cost_model_goodput_by_workload"] == {"a": 2.0, "b": 0.5}


def test_summary_without_learned_runs_has_no_learned_keys():
    assert summarize_rows([row("a", "cost-model", 1.0, fallback=5)]) == {}
