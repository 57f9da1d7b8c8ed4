"""exit_on_startup_error: the listed errors become one `prog: error:` line and exit 2; others pass."""

from __future__ import annotations

import pytest

from cli.startup import exit_on_startup_error


def test_a_listed_error_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exited:
        with exit_on_startup_error("prog", FileNotFoundError):
            raise FileNotFoundError("no such\nprofile")
    assert exited.value.code == 2
    assert capsys.readouterr().err == "prog: error: no such profile\n"


def test_other_errors_pass_through():
    with pytest.raises(KeyError):
        with exit_on_startup_error("prog", ValueError):
            raise KeyError("bug")
