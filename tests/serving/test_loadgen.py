"""The load generator: bounded plans, vLLM-style report, and a real run against the tiny server."""

from __future__ import annotations

import pytest

from serving.loadgen import LoadgenConfig, RequestResult, format_table, main, plan_requests, summarize
from tests.serving.conftest import live_server


def test_only_loopback_targets_are_accepted():
    with pytest.raises(ValueError, match="loopback"):
        LoadgenConfig(url="http://example.com:8000", request_rate=1)
    with pytest.raises(ValueError, match="--request-rate"):
        LoadgenConfig()


def test_plans_stay_within_duration_and_caps():
    cfg = LoadgenConfig(request_rate=5, burstiness=3.0, duration_s=4, prompts="specbench", max_tokens=32, max_requests=50)
    plans = plan_requests(cfg)
    assert 0 < len(plans) <= 50 and all(0 <= p.arrival_s < 4 and 4 <= p.max_tokens <= 32 for p in plans)
    trace = plan_requests(LoadgenConfig(trace="azure", time_scale=0.1, duration_s=5, prompts="humaneval", max_tokens=16))
    assert trace and all(p.arrival_s < 5 and not p.prompt.is_chat for p in trace)


def test_custom_trace_csv(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("time_s,GeneratedTokens\n10.0,3\n10.5,50\n12.0,7\n")
    plans = plan_requests(LoadgenConfig(trace=str(path), duration_s=2.5, max_tokens=20, min_tokens=4))
    assert [(p.arrival_s, p.max_tokens) for p in plans] == [(0.0, 4), (0.5, 20), (2.0, 7)]


def test_summary_percentiles_goodput_and_attainment():
    cfg = LoadgenConfig(request_rate=1, slo_ttft_s=0.1, slo_tpot_s=0.05)
    results = [RequestResult(200, ttft_s=0.05, e2e_s=0.5, itl_s=[0.05] * 9, num_output_tokens=10),    # meets both
               RequestResult(200, ttft_s=0.20, e2e_s=0.6, itl_s=[0.04] * 9, num_output_tokens=10),    # TTFT miss
               RequestResult(200, ttft_s=0.05, e2e_s=1.0, itl_s=[0.1] * 9, num_output_tokens=10),     # TPOT miss
               RequestResult(429, error="full")]
    report = summarize(cfg, results, duration_s=2.0)
    assert report["completed"] == 3 and report["rejected_429"] == 1 and report["failed"] == 0
    assert report["goodput_rps"] == pytest.approx(0.5) and report["slo_attainment"] == pytest.approx(0.25)
    assert report["ttft_ms"]["p50"] == pytest.approx(50.0)
    assert report["tpot_ms"]["mean"] == pytest.approx(1e3 * (0.45 + 0.4 + 0.95) / 3 / 9)
    assert report["output_throughput"] == pytest.approx(15.0)
    assert "Goodput" in format_table(report)


def test_a_run_against_the_live_server_answers_every_request(make_state, tmp_path, capsys):
    state = make_state(("ngram", "target"), 3, max_num_seqs=4, max_queue=16)
    with live_server(state) as url:
        cfg = LoadgenConfig(url=url, request_rate=8, duration_s=1.5, prompts="sharegpt", max_tokens=8, max_prompt_chars=80,
                            output_json=str(tmp_path / "report.json"))
        report = main(cfg)
    plans = plan_requests(cfg)
    assert report["num_requests"] == len(plans) > 3 and report["completed"] == len(plans)
    assert report["total_output_tokens"] == sum(p.max_tokens for p in plans)      # ignore_eos: exact lengths
    assert report["ttft_ms"]["p99"] >= report["ttft_ms"]["p50"] > 0
    assert report["spec_decode"]["num_draft_tokens"] > 0
    assert (tmp_path / "report.json").exists() and "Serving Benchmark Result" in capsys.readouterr().out
