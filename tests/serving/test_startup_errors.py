"""A start-up that cannot go on (a bad model path, a draft or profile it cannot use) ends with one
`error:` line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module, prog", [("serving", "python -m serving"), ("env.calibrate", "python -m env.calibrate")])
def test_a_missing_model_is_one_line_and_exit_2(module, prog):
    result = subprocess.run([sys.executable, "-m", module, "--model", "/nonexistent"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"{prog}: error: model path /nonexistent does not exist (use 'default' for the embedded model)"]


def test_a_directory_that_is_not_a_model_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "serving", "--model", str(tmp_path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"python -m serving: error: {tmp_path} is not a Hugging Face model directory (no config.json)"]
