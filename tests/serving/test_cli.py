"""`python -m serving` as a user runs it: a bad checkpoint starts on the fallback with one WARNING,
and SIGTERM drains the in-flight request (with /ready answering 503 'draining' meanwhile) before
the process exits with status 0."""

from __future__ import annotations

import json
import signal
import time

import httpx

from serving.server_process import ServerProcess


def test_bad_checkpoint_warns_once_and_sigterm_drains(tmp_path, target, tokenizer):
    model_dir = tmp_path / "tiny"
    target.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    policy = tmp_path / "router"
    policy.mkdir()
    (policy / "manifest.json").write_text('{"format": "specroute-policy", "format_version": 1, "algo": ')
    server = ServerProcess(["--model", str(model_dir), "--policy", str(policy), "--draft", "", "--max-num-seqs", "2",
                            "--max-queue", "2", "--num-threads", "1", "--profile-budget-s", "1",
                            "--decision-log", str(tmp_path / "decisions.jsonl")],
                           tmp_path / "server.log", ready_timeout_s=240)
    with server:
        assert httpx.get(f"{server.url}/ready").json()["router"]["source"] == "fallback"
        body = {"prompt": "the cat sat on the mat", "max_tokens": 480, "temperature": 0, "ignore_eos": True,
                "stream": True, "stream_options": {"include_usage": True}}
        events, after_signal, draining = [], 0, False
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if not line:
                    continue
                events.append(line)
                if len(events) == 2:
                    server.process.send_signal(signal.SIGTERM)
                    signalled = time.monotonic()
                elif len(events) > 2:
                    after_signal += 1
                    if not draining and time.monotonic() - signalled > 0.3:
                        ready = httpx.get(f"{server.url}/ready", timeout=5)     # the listener stays open
                        draining = ready.status_code == 503 and ready.json()["status"] == "draining"
        assert events[-1] == "data: [DONE]"
        assert json.loads(events[-2][len("data: "):])["usage"]["completion_tokens"] == 480
        assert after_signal > 10 and draining
        assert server.process.wait(timeout=60) == 0
    output = server.log_path.read_text()
    warnings = [line for line in output.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "falling back" in warnings[0] and "checkpoint_corrupt" in warnings[0], output
