"""`python -m serving` as a user runs it: a bad checkpoint starts on the fallback with one WARNING,
and SIGTERM drains the in-flight request before the process exits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_bad_checkpoint_warns_once_and_sigterm_drains(tmp_path, target, tokenizer):
    model_dir = tmp_path / "tiny"
    target.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    policy = tmp_path / "router"
    policy.mkdir()
    (policy / "manifest.json").write_text('{"format": "specroute-policy", "format_version": 1, "algo": ')
    port = free_port()
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "serving", "--model", str(model_dir), "--policy", str(policy), "--draft", "",
           "--port", str(port), "--max-batch", "2", "--max-queue", "2", "--num-threads", "1",
           "--profile-budget-s", "1"]
    with open(log, "w") as stderr:
        process = subprocess.Popen(cmd, cwd=REPO, stdout=stderr, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        assert httpx.get(f"{url}/ready").json()["router"]["source"] == "fallback"

        body = {"prompt": "the cat sat on the mat", "max_tokens": 480, "temperature": 0, "ignore_eos": True,
                "stream": True, "stream_options": {"include_usage": True}}
        events, after_signal, refused = [], 0, False
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if not line:
                    continue
                events.append(line)
                if len(events) == 2:
                    process.send_signal(signal.SIGTERM)
                    signalled = time.monotonic()
                elif len(events) > 2:
                    after_signal += 1
                    if not refused and time.monotonic() - signalled > 0.3:
                        try:
                            httpx.get(f"{url}/health", timeout=1)
                        except httpx.TransportError:
                            refused = True          # no new connections while draining
        assert events[-1] == "data: [DONE]"
        assert json.loads(events[-2][len("data: "):])["usage"]["completion_tokens"] == 480
        assert after_signal > 10 and refused
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log.read_text()
    warnings = [line for line in output.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "falling back" in warnings[0] and "checkpoint_corrupt" in warnings[0], output
