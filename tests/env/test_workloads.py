"""Workloads: presets, arrival processes at the asked rate and burstiness, trace windows, sweeps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from env.arrivals import gamma_arrivals, poisson_arrivals
from env.prompt_sources import CATEGORIES, load_prompts
from env.workloads import WORKLOADS, WorkloadSpec, build_window, load_sweep, resolve_workload


@pytest.mark.parametrize("name", WORKLOADS)
def test_every_preset_builds_a_sorted_window_with_bounded_output_lengths(name):
    spec = resolve_workload(name)
    window = build_window(spec, np.random.default_rng(0))
    assert len(window) == spec.num_requests
    times = [r.arrival_s for r in window]
    assert times[0] == 0.0 and times == sorted(times)
    assert all(spec.min_new_tokens <= r.max_new_tokens <= spec.max_new_tokens for r in window)
    assert all(r.prompt.text and r.prompt.category in CATEGORIES for r in window)


def test_same_seed_same_window_other_seed_other_window():
    spec = resolve_workload("spec_bench")
    first = build_window(spec, np.random.default_rng(7))
    assert first == build_window(spec, np.random.default_rng(7))
    assert first != build_window(spec, np.random.default_rng(8))


def test_poisson_and_gamma_hit_the_asked_rate_and_burstiness():
    rng = np.random.default_rng(0)
    poisson_gaps = np.diff(poisson_arrivals(rng, 20000, rate=4.0))
    assert poisson_gaps.mean() == pytest.approx(0.25, rel=0.05)
    assert poisson_gaps.std() / poisson_gaps.mean() == pytest.approx(1.0, rel=0.05)
    gamma_gaps = np.diff(gamma_arrivals(rng, 20000, rate=4.0, cv=3.0))
    assert gamma_gaps.mean() == pytest.approx(0.25, rel=0.1)
    assert gamma_gaps.std() / gamma_gaps.mean() == pytest.approx(3.0, rel=0.15)


def test_azure_trace_window_scales_time_and_uses_trace_output_sizes():
    spec = resolve_workload("azure_code")
    slow = build_window(spec, np.random.default_rng(3))
    fast = build_window(dataclasses.replace(spec, time_scale=0.5), np.random.default_rng(3))
    assert [r.arrival_s / 2 for r in slow] == pytest.approx([r.arrival_s for r in fast])
    assert {r.prompt.category for r in slow} == {"azure_code"}
    assert len({r.max_new_tokens for r in slow}) > 1


def test_load_sweep_changes_only_the_load():
    specs = load_sweep("sharegpt", [0.5, 1.0, 4.0])
    assert [s.rate for s in specs] == [0.5, 1.0, 4.0]
    assert {dataclasses.replace(s, rate=1.0) for s in specs} == {resolve_workload("sharegpt")}
    assert [s.time_scale for s in load_sweep("azure_code", [1.0, 2.0])] == [1.0, 0.5]


def test_spec_bench_tasks_filter_by_category():
    prompts = load_prompts("spec_bench:translation")
    assert len(prompts) == 80 and {p.category for p in prompts} == {"translation"}
    assert {p.category for p in load_prompts("spec_bench")} >= {"mt_bench", "rag", "qa"}


@pytest.mark.parametrize("bad, message", [
    ("no-such-workload", "unknown workload"),
    ({"rate": -1.0}, "rate must be a finite number > 0"),
    ({"rate": float("nan")}, "rate must be a finite number > 0"),
    ({"arrival": "weibull"}, "unknown arrival process"),
    ({"prompts": "spec_bench:poetry"}, "unknown prompt source"),
    ({"num_requests": 0}, "num_requests must be an integer > 0"),
    ({"min_new_tokens": 90, "max_new_tokens": 10}, "exceeds max_new_tokens"),
    ({"colour": "red"}, "unknown workload fields"),
])
def test_bad_workloads_raise_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        resolve_workload(bad)


def test_workload_dict_starts_from_a_named_preset():
    spec = resolve_workload({"name": "humaneval", "arrival": "gamma", "rate": 2.0, "cv": 4.0})
    assert spec == WorkloadSpec(prompts="humaneval", arrival="gamma", rate=2.0, cv=4.0)
