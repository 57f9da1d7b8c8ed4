"""--speculative-config: vLLM's JSON sets the same ServerConfig as the flags; unknown keys and
conflicts are usage errors (exit 2) before anything loads."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from cli.dataclass_args import parse_dataclass
from serving.config import ServerConfig


def parsed(argv: list[str]) -> dict:
    """The config's fields, less the JSON itself."""
    config = dataclasses.asdict(parse_dataclass(ServerConfig, argv))
    config.pop("speculative_config")
    return config


@pytest.mark.parametrize("spec, flags", [
    ({"method": "ngram", "num_speculative_tokens": 4}, ["--router", "ngram>target@4"]),
    ({"method": "suffix", "num_speculative_tokens": 2}, ["--router", "suffix>target@2"]),
    ({"method": "draft_model", "model": "ckpt/d", "num_speculative_tokens": 3},
     ["--draft", "ckpt/d", "--router", "draft>target@3"]),
    ({"method": "eagle", "model": "ckpt/e"}, ["--eagle", "ckpt/e"]),
    ({"router": "cost_model", "quantized_levels": ["int4", "int8"]},
     ["--router", "cost-model", "--quantized-levels", "int4,int8"]),
    ({"router": "plain"}, ["--router", "plain"]),
])
def test_the_json_sets_what_the_flags_set(spec, flags):
    assert parsed(["--speculative-config", json.dumps(spec)]) == parsed(flags)


def test_a_flag_that_agrees_is_accepted():
    spec = json.dumps({"method": "ngram", "num_speculative_tokens": 4})
    assert parsed(["--speculative-config", spec, "--router", "ngram>target@4"]) == parsed(["--router", "ngram>target@4"])


@pytest.mark.parametrize("spec, message", [
    ('{"method": "ngram", "prompt_lookup_max": 4}', "unknown key(s) prompt_lookup_max"),
    ('{"method": "medusa", "num_speculative_tokens": 2}', "method must be one of"),
    ('{"num_speculative_tokens": 2}', "num_speculative_tokens needs a method"),
    ('{"method": "ngram", "num_speculative_tokens": 0}', "num_speculative_tokens must be an integer >= 1"),
    ('{"method": "ngram", "num_speculative_tokens": 2, "router": "learned"}', "needs a method and no router"),
    ('{"method": "ngram", "model": "x"}', "model needs method"),
    ('{"method": "ngram",', "not valid JSON"),
    ('["ngram"]', "must be a JSON object"),
])
def test_bad_json_is_a_value_error_naming_the_problem(spec, message):
    with pytest.raises(ValueError, match="speculative_config") as caught:
        ServerConfig(speculative_config=spec)
    assert message in str(caught.value)


def test_a_flag_that_disagrees_is_a_conflict():
    with pytest.raises(ValueError, match="--router 'cost-model' conflicts with speculative_config"):
        ServerConfig(router="cost-model", speculative_config='{"method": "ngram", "num_speculative_tokens": 4}')


def test_unknown_keys_exit_2_before_anything_loads():
    result = subprocess.run([sys.executable, "-m", "serving", "--model", "/nonexistent", "--speculative-config",
                             '{"method": "ngram", "speculative_token_tree": "x"}'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("python -m serving: error: speculative_config: unknown key(s) "
                                              "speculative_token_tree; it takes method, model, num_speculative_tokens, "
                                              "router, quantized_levels")
