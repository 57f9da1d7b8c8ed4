"""Without the data sets, a command that needs them says so in one line (exit 2); help still works."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cli.missing_data import exit_on_missing_data
from data.paths import DataMissingError, REPO_ROOT, data_dir, missing_data_message


def run_command(module: str, *args: str, data: os.PathLike) -> subprocess.CompletedProcess:
    env = dict(os.environ, SPECROUTE_DATA=str(data))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_missing_directory_names_specroute_data(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECROUTE_DATA", str(tmp_path / "absent"))
    with pytest.raises(DataMissingError, match="SPECROUTE_DATA"):
        data_dir()


def test_only_files_under_the_data_directory_count_as_missing_data(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECROUTE_DATA", str(tmp_path))
    inside = FileNotFoundError(2, "No such file or directory", str(tmp_path / "spec_bench" / "question.jsonl"))
    outside = FileNotFoundError(2, "No such file or directory", "/elsewhere/checkpoints/router/policy.pt")
    assert "SPECROUTE_DATA" in missing_data_message(inside)
    assert missing_data_message(outside) is None
    assert missing_data_message(FileNotFoundError("no file name")) is None


def test_the_guard_turns_missing_data_into_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exited, exit_on_missing_data():
        raise DataMissingError("data directory /x does not exist; set SPECROUTE_DATA")
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().endswith("error: data directory /x does not exist; set SPECROUTE_DATA")


def test_the_guard_leaves_other_errors_alone():
    with pytest.raises(FileNotFoundError, match="checkpoint"), exit_on_missing_data():
        raise FileNotFoundError("checkpoint not found")


def test_help_works_without_the_data(tmp_path):
    result = run_command("train_router", "--help", data=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage: python -m train_router" in result.stdout


@pytest.mark.parametrize("module, args, data_name", [
    ("serving.loadgen", ("--trace", "azure", "--base-url", "http://127.0.0.1:9"), "."),   # a directory without the files
    ("agents.row_routing_bound", ("--output-dir", "{tmp}/out"), "absent"),           # no directory at all
], ids=["loadgen-empty-dir", "row_routing_bound-no-dir"])
def test_a_command_that_needs_the_data_says_so_in_one_line(tmp_path, module, args, data_name):
    result = run_command(module, *(arg.format(tmp=tmp_path) for arg in args), data=tmp_path / data_name)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"python -m {module}: error:"), result.stderr
    assert "SPECROUTE_DATA" in lines[0]
