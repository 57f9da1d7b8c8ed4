"""bench.plots and cli.plot_style: every benchmark's plots render from its results data, every series
looks different from every other, and plain / learned / cost-model / oracle / llama.cpp look the
same in every plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.colors import to_hex

from agents.evaluate_plots import evaluate_figures
from bench.plots import PlotsArgs, chains_figures, engine_figures, main, plot_results, serving_figures
from cli.plot_style import NAMED, named_role, series_styles, write_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHAINS = [f"int4>target@k{k}" for k in range(1, 21)]        # more series than a 10-colour cycle


def make_engine() -> dict:
    configs = ["llamacpp-plain", "hf-float32", "ours-plain-float32-prepacked", "ours-plain-float32-dense",
               "ours-ngram-k4", "ours-cost-model", "ours-learned"]
    table = [{"config": c, "tok_s": 5.0 + i, "x_llamacpp": (5.0 + i) / 5.0} for i, c in enumerate(configs)]
    curve = {"1": {"1": 50.0, "9": 120.0}, "4": {"1": 70.0, "9": 250.0}, "16": {"1": 140.0, "9": 870.0}}
    return {"table": table, "default_path": "float32-prepacked", "model": "m", "cpu": "Test CPU",
            "verification_curves": {"float32-prepacked": curve, "float32-dense": {"1": {"1": 60.0, "9": 190.0}}}}


def make_chains() -> dict:
    columns = ["plain", "cost-model", "learned", *CHAINS]
    return {"load_columns": columns, "load": [
        {"concurrency": c, "rows": [{"config": name, "tokens_per_s": 10.0 * c + i, "mean_tpot_ms": 40.0 + c * i}
                                    for i, name in enumerate(columns)]} for c in (1, 4, 16)]}


def make_serving() -> dict:
    workloads = ["azure-code x1/12", "specbench poisson 0.1/s", "specbench poisson 1.5/s"]
    report = {"output_throughput": 12.0, "tpot_ms": {"p50": 60.0}}
    return {"static": "suffix>target@k8", "rows": [{"workload": w, "router": r, "report": report}
                                                   for w in workloads for r in ("learned", "cost_model", "static", "plain")]}


def make_evaluate() -> dict:
    policies = ["learned", "cost-model", "static:plain", *[f"static:{c}" for c in CHAINS], "no-spec", "oracle"]
    labels = ["plain", *CHAINS]
    point = {"goodput": {"mean": 1.0}, "action_fractions": [1 / len(labels)] * len(labels)}
    return {"action_labels": labels, "sweep": {p: {"0.1": point, "1.0": point} for p in policies}}


def line_styles(fig) -> list[tuple[str, tuple]]:
    return [(line.get_label(), (to_hex(line.get_color()), line.get_linestyle(), line.get_marker()))
            for ax in fig.axes for line in ax.get_lines() if not line.get_label().startswith("_")]


def bar_styles(fig) -> list[tuple[str, tuple]]:
    return [(bars.get_label(), (to_hex(bars.patches[0].get_facecolor()), bars.patches[0].get_hatch()))
            for ax in fig.axes for bars in ax.containers]


def assert_distinct_per_series(styles: list[tuple[str, tuple]]) -> dict[str, tuple]:
    """Each series keeps one style across panels, and no two series share one."""
    by_series: dict[str, tuple] = {}
    for label, style in styles:
        assert by_series.setdefault(label, style) == style, f"{label} changes style between panels"
    assert len(set(by_series.values())) == len(by_series), f"series share a style: {by_series}"
    return by_series


def named_line(role: str) -> tuple:
    style = NAMED[role]
    return (style.color, style.linestyle, style.marker)


def test_thirty_series_all_differ_and_the_first_25_by_colour_alone():
    styles = list(series_styles(f"series {i}" for i in range(30)).values())
    assert len({(s.color, s.linestyle, s.marker) for s in styles}) == 30
    assert len({s.color for s in styles[:25]}) == 25
    assert not {s.color for s in styles} & {s.color for s in NAMED.values()}


@pytest.mark.parametrize("name, role", [("cost_model", "cost-model"), ("ours-cost-model", "cost-model"),
                                        ("static:plain", "plain"), ("llamacpp-plain", "llama.cpp"),
                                        ("ours-learned", "learned"), ("oracle", "oracle"), ("no-spec", None)])
def test_named_series_are_recognised_under_each_benchmarks_spelling(name, role):
    assert named_role(name) == role


def test_a_named_style_is_used_once_per_plot():
    styles = series_styles(["plain", "static:plain"])
    assert styles["plain"] == NAMED["plain"] and styles["static:plain"] != NAMED["plain"]


def test_evaluate_goodput_gives_every_policy_its_own_style():
    figures = evaluate_figures(make_evaluate())
    lines = assert_distinct_per_series(line_styles(figures["goodput_vs_load"]))
    assert len(lines) == 25
    for policy, role in (("learned", "learned"), ("oracle", "oracle"), ("cost-model", "cost-model"),
                         ("static:plain", "plain")):
        assert lines[policy] == named_line(role)
    bars = assert_distinct_per_series(bar_styles(figures["actions_vs_load"]))
    assert bars["plain"] == (NAMED["plain"].color, "")


def test_engine_bars_and_curve_styles():
    figures = engine_figures(make_engine())
    bars = assert_distinct_per_series(bar_styles(figures["tok_s"]))
    assert bars["ours-plain-float32-prepacked"][0] == NAMED["plain"].color       # the default path is "plain"
    assert bars["llamacpp-plain"][0] == NAMED["llama.cpp"].color
    assert bars["ours-learned"][0] == NAMED["learned"].color
    (label, style), = line_styles(figures["tok_s"])                               # llama.cpp as a vertical line
    assert label.startswith("llama.cpp plain") and style[:2] == named_line("llama.cpp")[:2]
    curves = assert_distinct_per_series(line_styles(figures["verification_curve"]))
    assert set(curves) == {"float32-prepacked, batch 1", "float32-prepacked, batch 16", "float32-dense, batch 1"}


def test_chains_lines_per_column_in_both_panels():
    lines = assert_distinct_per_series(line_styles(chains_figures(make_chains())["load"]))
    assert len(lines) == 23
    for role in ("plain", "cost-model", "learned"):
        assert lines[role] == named_line(role)


def test_serving_lines_per_router():
    lines = assert_distinct_per_series(line_styles(serving_figures(make_serving())["load"]))
    assert set(lines) == {"learned", "cost-model", "static suffix>target@k8", "plain"}
    assert lines["cost-model"] == named_line("cost-model")


@pytest.mark.parametrize("name, data, suffixes", [
    ("engine", make_engine(), ["tok_s", "verification_curve"]), ("chains", make_chains(), ["load"]),
    ("serving", make_serving(), ["load"]), ("evaluate", make_evaluate(), ["goodput_vs_load", "actions_vs_load"])])
def test_each_results_file_gets_its_pngs_next_to_it(tmp_path, name, data, suffixes):
    written = plot_results(data, tmp_path / f"{name}.json")
    assert [p.name for p in written] == [f"{name}_{s}.png" for s in suffixes]
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in written)


def test_the_cli_renders_every_known_results_file_again(tmp_path):
    (tmp_path / "chains.json").write_text(json.dumps(make_chains()))
    (tmp_path / "reliability.json").write_text(json.dumps({"passed": True}))       # no plots for it
    assert [p.name for p in main(PlotsArgs(results_dir=str(tmp_path)))] == ["chains_load.png"]


def test_a_plotting_error_is_one_warning_not_a_failure(tmp_path, capsys):
    def broken(data: dict) -> dict:
        raise KeyError("table")

    assert write_plots(broken, {}, tmp_path, "engine") == []
    assert capsys.readouterr().out == "warning: plots of engine not written: KeyError: 'table'\n"
    assert not list(Path(tmp_path).iterdir())
