"""One name per knob: old flag spellings warn and still work; declared choices are refused as
usage errors (exit 2) before a command loads anything."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from cli.dataclass_args import parse_dataclass


@dataclass
class Renamed:
    """A script whose flags were renamed."""

    max_tokens: int = field(default=8, metadata={"help": "new tokens", "aliases": ["--max-new-tokens"]})
    slo_tpot_s: float = field(default=0.25, metadata={"help": "TPOT SLO (s)", "aliases": {"--slo-tpot-ms": 1e-3}})
    use_cache: bool = field(default=True, metadata={"help": "reuse the cache", "aliases": ["--cache"]})
    kernels: tuple[str, ...] = field(default=("dense",), metadata={"help": "kernels", "choices": ["dense", "prepacked"]})


def test_an_old_spelling_sets_the_field_and_warns_once_on_stderr(capsys):
    assert parse_dataclass(Renamed, ["--max-new-tokens", "5"], prog="script").max_tokens == 5
    err = capsys.readouterr().err
    assert err.strip() == "script: warning: --max-new-tokens is deprecated, use --max-tokens"
    assert parse_dataclass(Renamed, ["--max_new_tokens=6"]).max_tokens == 6       # underscore and `=` too
    assert parse_dataclass(Renamed, ["--no-cache"]).use_cache is False            # a switch's --no- form
    assert parse_dataclass(Renamed, ["--max-tokens", "7"], prog="script").max_tokens == 7
    assert "warning" not in capsys.readouterr().err.split("--no-cache")[-1]       # the new name is silent


@pytest.mark.parametrize("argv", [["--slo-tpot-ms", "100"], ["--slo-tpot-ms=100"]])
def test_an_alias_whose_unit_changed_converts_its_value(argv, capsys):
    assert parse_dataclass(Renamed, argv).slo_tpot_s == pytest.approx(0.1)
    assert "use --slo-tpot-s" in capsys.readouterr().err


def test_help_lists_only_the_new_names(capsys):
    with pytest.raises(SystemExit):
        parse_dataclass(Renamed, ["--help"])
    out = capsys.readouterr().out
    assert "--max-tokens" in out and "--max-new-tokens" not in out and "{dense,prepacked}" in out


def test_a_list_value_outside_the_choices_is_a_usage_error(capsys):
    assert parse_dataclass(Renamed, ["--kernels", "dense,prepacked"]).kernels == ("dense", "prepacked")
    with pytest.raises(SystemExit) as exit_info:
        parse_dataclass(Renamed, ["--kernels", "dense,fast"], prog="script")
    assert exit_info.value.code == 2
    assert "invalid choice: 'fast'" in capsys.readouterr().err


@pytest.mark.parametrize("command, argv, message", [
    (["-m", "serving"], ["--dtype", "foo"], "argument --dtype: invalid choice: 'foo'"),
    (["-m", "serving"], ["--attention", "flash"], "argument --attention: invalid choice: 'flash'"),
    (["-m", "engine", "generate"], ["--prompt", "hi", "--kernel", "fast"], "argument --kernel: invalid choice"),
    (["-m", "engine.profile"], ["--weights", "int3"], "argument --weights: invalid choice: 'int3'"),
    (["-m", "env.calibrate"], ["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["-m", "distill.draft"], ["--storage-dtype", "int8"], "argument --storage-dtype: invalid choice"),
    (["-m", "serving.loadgen"], ["--dataset-name", "nope"], "argument --dataset-name: invalid choice: 'nope'"),
    (["-m", "train_router"], ["--algo", "a2c"], "argument --algo: invalid choice: 'a2c'"),
    (["-m", "serving"], ["--router", "fastest"], "decision 'fastest' must be 'plain' or levels"),
    (["-m", "agents.evaluate"], ["--policies", "learned", "fastest"], "unknown policy 'fastest'"),
    (["-m", "agents.ope_validate"], ["--behaviour", "fastest"], "unknown policy 'fastest'"),
    (["-m", "train_router"], ["--warm-start", "fastest"], "unknown policy 'fastest'"),
    (["-m", "bench.bench_serving"], ["--routers", "fastest"], "unknown routers ['fastest']"),
])
def test_commands_refuse_a_bad_choice_with_exit_2_before_loading(command, argv, message):
    result = subprocess.run([sys.executable, *command, *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: python -m ")


def test_commands_take_their_old_flags_with_a_warning():
    result = subprocess.run([sys.executable, "-m", "serving", "--max-batch", "4", "--slo-tpot-ms", "100",
                             "--router", "cost_model", "--dtype", "foo"], capture_output=True, text=True, timeout=120)
    assert "--max-batch is deprecated, use --max-num-seqs" in result.stderr
    assert "--slo-tpot-ms is deprecated, use --slo-tpot-s" in result.stderr
    assert result.returncode == 2            # then the bad --dtype, before any model loads


def test_the_server_accepts_both_spellings_of_the_cost_model_router():
    from serving.config import ServerConfig
    assert ServerConfig(router="cost_model").router == ServerConfig(router="cost-model").router == "cost-model"
