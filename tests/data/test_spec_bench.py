"""The data directory and the one Spec-Bench reader every package uses."""

from __future__ import annotations

import json

import pytest

from data.paths import data_dir
from data.spec_bench import MT_BENCH_CATEGORIES, SPEC_BENCH_CATEGORIES, SPEC_BENCH_TASKS, load_spec_bench


def test_data_dir_follows_specroute_data(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECROUTE_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.setenv("SPECROUTE_DATA", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="SPECROUTE_DATA"):
        data_dir()


def test_spec_bench_has_13_categories_and_6_tasks():
    questions = load_spec_bench()
    assert len(questions) == 480
    assert {q.category for q in questions} == set(SPEC_BENCH_CATEGORIES)
    assert {q.task for q in questions} == set(SPEC_BENCH_TASKS)
    assert all(q.task == "mt_bench" and q.question_id <= 160 for q in questions if q.category in MT_BENCH_CATEGORIES)


def test_spec_bench_reads_the_directory_it_is_pointed_at(tmp_path, monkeypatch):
    (tmp_path / "spec_bench").mkdir()
    row = {"question_id": 7, "category": "qa", "turns": ["a?", "b?"], "reference": ["yes"]}
    (tmp_path / "spec_bench" / "question.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.setenv("SPECROUTE_DATA", str(tmp_path))
    [question] = load_spec_bench()
    assert (question.question_id, question.text, question.turns, question.reference, question.task) == \
        (7, "a?", ("a?", "b?"), "yes", "qa")
