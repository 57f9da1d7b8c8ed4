"""bench.common: Spec-Bench sampling covers every category reproducibly; results files round-trip."""

from __future__ import annotations

import json

import pytest

from bench.common import SPEC_BENCH_CATEGORIES, PeakRSS, check_spec_bench_args, parse_categories, sample_prompts
from cli.results import markdown_table, write_results


def test_sample_prompts_covers_all_13_categories_round_robin():
    prompts = sample_prompts(2)
    assert len(SPEC_BENCH_CATEGORIES) == 13
    assert [p.category for p in prompts] == list(SPEC_BENCH_CATEGORIES) * 2
    assert len({p.question_id for p in prompts}) == 26
    assert all(p.question_id <= 160 for p in prompts if p.category in SPEC_BENCH_CATEGORIES[:8])
    assert sample_prompts(2) == prompts and sample_prompts(2, seed=1) != prompts


def test_sample_prompts_rejects_unknown_category():
    with pytest.raises(ValueError, match="unknown categories"):
        sample_prompts(1, ["writing", "poetry"])


def test_peak_rss_window_sees_an_allocation():
    rss = PeakRSS()
    rss.reset()
    before = rss.read_mb()
    block = bytearray(64 << 20)
    block[:: 4096] = b"x" * len(block[:: 4096])        # touch every page
    assert rss.read_mb() >= before + 60
    del block


def test_write_results_round_trips(tmp_path):
    table = markdown_table(["config", "tokens/s", "acceptance"], [["a", 12.345, None], ["b", 1234.5, 0.5]])
    json_path, md_path = write_results("x", {"value": 1}, table, directory=tmp_path)
    assert json.loads(json_path.read_text()) == {"value": 1}
    assert md_path.read_text().splitlines() == ["| config | tokens/s | acceptance |", "|---|---:|---:|",
                                                "| a | 12.3 | n/a |", "| b | 1234 | 0.5 |"]


def test_shared_benchmark_arguments_are_checked_alike():
    assert parse_categories("") == list(SPEC_BENCH_CATEGORIES)
    assert parse_categories(" qa, writing ,") == ["qa", "writing"]
    check_spec_bench_args(1, 16, "qa,writing", "smoke")
    for args, message in (((0, 16, "", "x"), "--prompts-per-category"), ((1, 0, "", "x"), "--max-tokens"),
                          ((1, 16, "qa,poetry", "x"), "unknown categories \\['poetry'\\]"),
                          ((1, 16, "", "a/b"), "--output-name"), ((1, 16, "", ""), "--output-name")):
        with pytest.raises(ValueError, match=message):
            check_spec_bench_args(*args)
