"""The decision log is written off the engine thread, rotated by size, and complete after a clean
shutdown (every row the router logged is on disk)."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from router.decision_log import DecisionLogRow, read_decision_log
from serving.app import create_app
from serving.decision_log import BackgroundDecisionLog


def make_row(step: int) -> DecisionLogRow:
    return DecisionLogRow(obs=[0.5] * 8, action=1, propensity=1.0, reward=2.0, next_obs=[0.25] * 8, done=False,
                          policy_version="test", episode=0, step=step)


def test_rows_are_written_by_a_writer_thread_rotated_by_size_and_none_lost(tmp_path, monkeypatch):
    writers = set()
    append = BackgroundDecisionLog._append

    def spy(self, line):
        writers.add(threading.current_thread().name)
        append(self, line)

    monkeypatch.setattr(BackgroundDecisionLog, "_append", spy)
    path = tmp_path / "decisions.jsonl"
    log = BackgroundDecisionLog(path, max_bytes=2000, keep=50)
    for step in range(100):
        log.write(make_row(step))
    log.close()
    files = [path] + sorted(tmp_path.glob("decisions.jsonl.*"), key=lambda p: -int(p.suffix[1:]))
    assert len(files) > 2 and all(f.stat().st_size <= 2000 for f in files)
    steps = [row.step for f in files for row in read_decision_log(f)]
    assert sorted(steps) == list(range(100)) and log.num_rows == 100 and log.num_dropped == 0
    assert writers == {"decision-log"}


def test_only_keep_rotated_files_remain(tmp_path):
    log = BackgroundDecisionLog(tmp_path / "d.jsonl", max_bytes=600, keep=2)
    for step in range(60):
        log.write(make_row(step))
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "d.jsonl.1", "d.jsonl.2"]


def test_the_server_logs_every_decision_by_shutdown(make_state, tmp_path):
    path = tmp_path / "decisions.jsonl"
    state = make_state(("ngram", "target"), 4, decision_log=str(path), decision_log_max_mb=0.01)
    with TestClient(create_app(state)) as client:
        for _ in range(3):
            client.post("/v1/completions", json={"prompt": "the cat sat on the mat", "max_tokens": 16,
                                                 "temperature": 0, "ignore_eos": True})
    logged = state.router._num_logged
    rows = [row for f in tmp_path.glob("decisions.jsonl*") for row in read_decision_log(f)]
    assert logged > 10 and len(rows) == logged
    assert len(list(tmp_path.glob("decisions.jsonl.*"))) >= 1
