"""`cli.dataclass_args`: the one dataclass -> command line parser every script uses."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cli.dataclass_args import parse_dataclass


@dataclass
class Args:
    """Settings of a made-up script."""

    num_steps: int = field(default=3, metadata={"help": "steps to run"})
    rate: float | None = field(default=None, metadata={"help": "arrival rate; none = unlimited"})
    use_cache: bool = field(default=True, metadata={"help": "reuse cached data"})
    chat: bool | None = field(default=None, metadata={"help": "chat template (default: when there is one)"})
    loads: tuple[float, ...] = field(default=(0.5, 1.0), metadata={"help": "loads to sweep"})
    drafts: list[str] = field(default_factory=list, metadata={"help": "drafts as NAME=PATH"})
    level: str = field(default="info", metadata={"help": "log level", "choices": ["info", "debug"]})

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")


@dataclass
class Positional:
    logs: str = field(default="", metadata={"help": "log file"})
    seed: int = field(default=0, metadata={"help": "seed"})


def test_no_arguments_give_the_dataclass_defaults():
    assert parse_dataclass(Args, []) == Args()


def test_bool_flags_switch_both_ways_and_optional_bools_stay_unset():
    assert parse_dataclass(Args, ["--no-use-cache"]).use_cache is False
    assert parse_dataclass(Args, ["--use-cache"]).use_cache is True
    assert parse_dataclass(Args, ["--chat"]).chat is True
    assert parse_dataclass(Args, ["--no-chat"]).chat is False


def test_tuple_and_list_flags_take_spaced_or_comma_separated_values():
    assert parse_dataclass(Args, ["--loads", "0.25", "2"]).loads == (0.25, 2.0)
    assert parse_dataclass(Args, ["--loads", "0.25,2"]).loads == (0.25, 2.0)
    assert parse_dataclass(Args, ["--loads", ""]).loads == ()
    repeated = parse_dataclass(Args, ["--drafts", "a=x", "--drafts", "b=y"])
    assert repeated.drafts == ["a=x", "b=y"]


def test_optional_values_take_none():
    assert parse_dataclass(Args, ["--rate", "2.5"]).rate == 2.5
    assert parse_dataclass(Args, ["--rate", "2.5", "--rate", "none"]).rate is None


def test_underscore_spellings_work_like_dashed_ones():
    cfg = parse_dataclass(Args, ["--num_steps", "7", "--no-use_cache", "--num-steps=8"])
    assert cfg.num_steps == 8 and cfg.use_cache is False
    assert parse_dataclass(Args, ["--num_steps=9"]).num_steps == 9


def test_positional_fields():
    cfg = parse_dataclass(Positional, ["logs.jsonl", "--seed", "4"], positional=("logs",))
    assert cfg == Positional("logs.jsonl", 4)


@pytest.mark.parametrize("argv, message", [
    (["--num-steps", "0"], "num_steps must be >= 1, got 0"),        # the dataclass' own check
    (["--num-steps", "x"], "invalid int value: 'x'"),
    (["--loads", "0.5,fast"], "--loads"),
    (["--level", "loud"], "invalid choice: 'loud'"),
    (["--unknown"], "unrecognized arguments: --unknown"),
])
def test_bad_values_exit_2_with_one_error_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_dataclass(Args, argv, prog="script")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert message in err and "script: error:" in err


def test_help_lists_every_flag_once_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_dataclass(Args, ["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--num-steps", "--rate", "--use-cache, --no-use-cache", "--loads", "--drafts", "--level"):
        assert flag in out
    assert "--num_steps" not in out and "(default: 0.5,1.0)" in out
    assert "Settings of a made-up script." in out
