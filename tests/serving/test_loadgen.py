"""The load generator: bounded plans, vLLM-style report, a run against a fake OpenAI server with a
user's JSONL prompts, and a real run against the tiny SpecRoute server."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cli.dataclass_args import parse_dataclass
from serving.loadgen import LoadgenConfig, RequestResult, cli, format_table, main, plan_requests, summarize
from tests.serving.conftest import live_server


class FakeOpenAIHandler(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible server: /v1/models, and streamed (SSE) completions and chat
    completions that answer `max_tokens` one-word chunks, with no SpecRoute fields."""

    def log_message(self, *args) -> None:
        pass

    def _send_json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path != "/v1/models":
            return self._send_json(404, {"error": {"message": "not found"}})
        self._send_json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"},
                                                         {"id": "other-model", "object": "model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            return self._send_json(404, {"error": {"message": "not found"}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        is_chat = self.path == "/v1/chat/completions"
        for _ in range(body["max_tokens"]):
            choice = {"index": 0, "delta": {"content": "word "}} if is_chat else {"index": 0, "text": "word "}
            self.wfile.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
        if self.server.sends_usage:
            usage = {"prompt_tokens": 7, "completion_tokens": body["max_tokens"], "total_tokens": 7 + body["max_tokens"]}
            self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


@contextlib.contextmanager
def fake_openai_server(sends_usage: bool = True):
    """Yields (base URL, the list of requests it received)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAIHandler)
    server.seen, server.sends_usage = [], sends_usage
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen
    finally:
        server.shutdown()
        server.server_close()


def write_jsonl(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


PROMPT_LINES = [json.dumps({"prompt": "def add(a, b):", "max_tokens": 5}),
                "",
                json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "Name a prime."}], "output_len": 3}),
                json.dumps({"prompt": "Once upon a time"})]


def test_any_http_or_https_host_is_a_target_and_other_urls_are_refused():
    assert LoadgenConfig(base_url="https://api.example.com", request_rate=1).base_url == "https://api.example.com"
    with pytest.raises(ValueError, match="http:// or https://"):
        LoadgenConfig(base_url="ftp://example.com", request_rate=1)
    with pytest.raises(ValueError, match="--request-rate"):
        LoadgenConfig()


def test_old_flag_names_still_work_with_a_warning(capsys):
    cfg = parse_dataclass(LoadgenConfig, ["--url", "http://10.0.0.2:8000", "--prompts", "humaneval",
                                          "--max-requests", "7", "--rate", "2"], prog="loadgen")
    assert (cfg.base_url, cfg.dataset_name, cfg.num_prompts, cfg.request_rate) == ("http://10.0.0.2:8000", "humaneval", 7, 2)
    assert "--url is deprecated, use --base-url" in capsys.readouterr().err


def test_plans_stay_within_duration_and_caps():
    cfg = LoadgenConfig(request_rate=5, burstiness=3.0, duration_s=4, dataset_name="specbench", max_tokens=32, num_prompts=50)
    plans = plan_requests(cfg)
    assert 0 < len(plans) <= 50 and all(0 <= p.arrival_s < 4 and 4 <= p.max_tokens <= 32 for p in plans)
    trace = plan_requests(LoadgenConfig(trace="azure", time_scale=0.1, duration_s=5, dataset_name="humaneval", max_tokens=16))
    assert trace and all(p.arrival_s < 5 and not p.prompt.is_chat for p in trace)


def test_custom_trace_csv(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("time_s,GeneratedTokens\n10.0,3\n10.5,50\n12.0,7\n")
    plans = plan_requests(LoadgenConfig(trace=str(path), duration_s=2.5, max_tokens=20, min_tokens=4))
    assert [(p.arrival_s, p.max_tokens) for p in plans] == [(0.0, 4), (0.5, 20), (2.0, 7)]


def test_jsonl_prompts_are_planned_in_file_order_with_their_output_lengths(tmp_path):
    path = write_jsonl(tmp_path / "prompts.jsonl", PROMPT_LINES)
    plans = plan_requests(LoadgenConfig(dataset_path=path, request_rate=100, num_prompts=4, max_tokens=16))
    assert LoadgenConfig(dataset_path=path, request_rate=1).dataset_name == "custom"
    assert [p.prompt.text for p in plans] == ["def add(a, b):", "Be brief.\n\nName a prime.", "Once upon a time",
                                              "def add(a, b):"]
    assert [p.max_tokens for p in plans] == [5, 3, 16, 5]


def test_summary_percentiles_goodput_and_attainment():
    cfg = LoadgenConfig(request_rate=1, slo_ttft_s=0.1, slo_tpot_s=0.05)
    results = [RequestResult(200, ttft_s=0.05, e2e_s=0.5, itl_s=[0.05] * 9, num_output_tokens=10),    # meets both
               RequestResult(200, ttft_s=0.20, e2e_s=0.6, itl_s=[0.04] * 9, num_output_tokens=10),    # TTFT miss
               RequestResult(200, ttft_s=0.05, e2e_s=1.0, itl_s=[0.1] * 9, num_output_tokens=10),     # TPOT miss
               RequestResult(429, error="full")]
    report = summarize(cfg, results, duration_s=2.0, model="m")
    assert report["completed"] == 3 and report["rejected_429"] == 1 and report["failed"] == 0
    assert report["goodput_rps"] == pytest.approx(0.5) and report["slo_attainment"] == pytest.approx(0.25)
    assert report["ttft_ms"]["p50"] == pytest.approx(50.0)
    assert report["tpot_ms"]["mean"] == pytest.approx(1e3 * (0.45 + 0.4 + 0.95) / 3 / 9)
    assert report["output_throughput"] == pytest.approx(15.0)
    assert report["spec_decode"]["acceptance_rate"] is None and report["model"] == "m"
    table = format_table(report)
    assert "Goodput" in table and "http://127.0.0.1:8000" in table
    assert [line for line in table.splitlines() if line.startswith("Draft acceptance rate:")][0].endswith("n/a")


def test_a_jsonl_run_against_an_openai_compatible_server(tmp_path, capsys):
    path = write_jsonl(tmp_path / "prompts.jsonl", PROMPT_LINES)
    out = tmp_path / "report.json"
    with fake_openai_server() as (url, seen):
        report = cli(["--base-url", url, "--dataset-path", path, "--request-rate", "50", "--num-prompts", "6",
                      "--max-tokens", "16", "--api-key", "sk-test", "--output-json", str(out)])
    assert report["num_requests"] == report["completed"] == 6 and report["failed"] == 0
    assert report["total_output_tokens"] == 2 * (5 + 3 + 16) and report["total_input_tokens"] == 6 * 7
    assert (report["base_url"], report["model"]) == (url, "fake-model")
    assert report["spec_decode"] == {"num_draft_tokens": None, "num_accepted_tokens": None, "acceptance_rate": None}
    assert report["tpot_ms"]["mean"] is not None and report["ttft_ms"]["p99"] >= report["ttft_ms"]["p50"] > 0
    assert sorted(r["path"] for r in seen) == ["/v1/chat/completions"] * 2 + ["/v1/completions"] * 4
    assert {r["auth"] for r in seen} == {"Bearer sk-test"} and {r["body"]["model"] for r in seen} == {"fake-model"}
    chat = next(r["body"] for r in seen if r["path"] == "/v1/chat/completions")
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."}
    assert json.loads(out.read_text())["model"] == "fake-model" and "sk-test" not in out.read_text()
    assert "fake-model" in capsys.readouterr().out


def test_a_server_without_usage_is_counted_by_chunks_and_the_key_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    path = write_jsonl(tmp_path / "prompts.jsonl", [json.dumps({"prompt": "Hi", "max_tokens": 4})])
    with fake_openai_server(sends_usage=False) as (url, seen):
        report = main(LoadgenConfig(base_url=url, dataset_path=path, request_rate=50, num_prompts=2, model="mine",
                                    endpoint="/v1/chat/completions"))
    assert report["completed"] == 2 and report["total_output_tokens"] == 8 and report["model"] == "mine"
    assert [(r["path"], r["auth"]) for r in seen] == [("/v1/chat/completions", "Bearer sk-env")] * 2
    assert seen[0]["body"]["messages"] == [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "ok"}', '{"prompt": "cut', '{"prompt": "ok"}'], "line 2 is not valid JSON"),
    (['{"prompt": "ok"}', "", '{"text": "no prompt"}'], 'line 3 needs "prompt"'),
    (['{"messages": [{"role": "user"}]}'], 'line 1: "messages" must be'),
    (['{"prompt": "ok", "max_tokens": 0}'], "line 1: max_tokens / output_len must be an integer > 0"),
])
def test_a_bad_jsonl_line_is_one_error_line_naming_it(tmp_path, capsys, lines, message):
    path = write_jsonl(tmp_path / "prompts.jsonl", lines)
    with pytest.raises(SystemExit) as exit_info:
        cli(["--dataset-path", path, "--request-rate", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and path in err
    assert err.count("\n") == 1 and err.startswith("python -m serving.loadgen: error:")


def test_a_missing_dataset_path_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(["--dataset-path", str(tmp_path / "nope.jsonl"), "--request-rate", "1"])
    assert exit_info.value.code == 2
    assert f"error: --dataset-path {tmp_path / 'nope.jsonl'} does not exist" in capsys.readouterr().err


def test_a_run_against_the_live_server_answers_every_request(make_state, tmp_path, capsys):
    state = make_state(("ngram", "target"), 3, max_num_seqs=4, max_queue=16)
    with live_server(state) as url:
        cfg = LoadgenConfig(base_url=url, request_rate=8, duration_s=1.5, dataset_name="sharegpt", max_tokens=8,
                            max_prompt_chars=80, output_json=str(tmp_path / "report.json"))
        report = main(cfg)
    plans = plan_requests(cfg)
    assert report["num_requests"] == len(plans) > 3 and report["completed"] == len(plans)
    assert report["total_output_tokens"] == sum(p.max_tokens for p in plans)      # ignore_eos: exact lengths
    assert report["ttft_ms"]["p99"] >= report["ttft_ms"]["p50"] > 0
    assert report["spec_decode"]["num_draft_tokens"] > 0
    assert (tmp_path / "report.json").exists() and "Serving Benchmark Result" in capsys.readouterr().out
