"""`python -m engine generate`: the demo CLI prints the same text as plain greedy decoding, its
stats add up, and bad input is one error line with exit code 2 (no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from data.paths import REPO_ROOT
from engine import Decision, Engine, EngineConfig, SamplingParams, StaticRouter
from engine.__main__ import EXIT_BAD_INPUT, GenerateArgs, cli
from engine.draft_checkpoint import DraftManifest, architecture_of, save_draft
from engine.draft_model import build_draft
from engine.models import load_model
from tests.tiny_models import build_char_tokenizer, build_tiny_llama

PROMPT = "the cat sat on the mat. the cat sat on the"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny Llama and the char tokenizer saved as a local HF directory (no download)."""
    directory = tmp_path_factory.mktemp("tiny_model")
    build_tiny_llama(seed=0, num_layers=2).save_pretrained(directory)
    build_char_tokenizer().save_pretrained(directory)
    return directory


def plain_greedy_text(prompt: str, max_tokens: int) -> str:
    engine = Engine(build_tiny_llama(seed=0, num_layers=2), build_char_tokenizer(), EngineConfig(max_model_len=256),
                    router=StaticRouter(Decision()))
    return engine.generate([[{"role": "user", "content": prompt}]], SamplingParams(max_tokens=max_tokens))[0].text


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300)


def test_generate_subprocess_prints_plain_greedy_text_and_stats(model_dir):
    result = run_cli("generate", "--model", str(model_dir), "--prompt", PROMPT, "--chain", "ngram>target",
                     "--k", "4", "--max-tokens", "24", "--json", "--num-threads", "1")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["text"] == plain_greedy_text(PROMPT, 24)
    assert report["chain"] == "ngram>target@k4"
    assert 1 <= report["num_steps"] <= report["num_output_tokens"] <= 24
    assert 0 <= report["num_accepted_tokens"] <= report["num_draft_tokens"]
    # every step commits its accepted drafts plus one token of the target's own
    assert report["num_output_tokens"] == report["num_steps"] + report["num_accepted_tokens"]
    assert report["tokens_per_s"] > 0


def test_a_chain_through_the_int4_copy_prints_plain_greedy_text(model_dir, capsys):
    """`int4` in --chain builds the target's quantized copy as a level; the target still verifies."""
    assert cli(["generate", "--model", str(model_dir), "--prompt", PROMPT, "--chain", "ngram>int4>target",
                "--k", "3", "--max-tokens", "24", "--json", "--num-threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["text"] == plain_greedy_text(PROMPT, 24)
    assert report["chain"] == "ngram>int4>target@k3" and report["num_draft_tokens"] > 0


def test_bad_input_subprocess_is_one_line_exit_2(model_dir):
    result = run_cli("generate", "--model", str(model_dir), "--prompt", "hi", "--chain", "medusa>target")
    assert result.returncode == EXIT_BAD_INPUT
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "unknown drafter 'medusa'" in errors[0]


@pytest.mark.parametrize("args, message", [
    (["--k", "-1"], "K must be an integer >= 0"),
    (["--chain", "target>ngram"], "must end at 'target'"),
    (["--chain", "ngram>suffix>target"], "cannot verify"),
    (["--chain", "ngram>target", "--draft-p-min", "0.5"], "needs a model first level"),
    (["--chain", "int4>target", "--draft-p-min", "1.5"], "p_min must be a number in [0, 1)"),
    (["--temperature", "-0.5"], "temperature"),
    (["--max-tokens", "0"], "max_tokens"),
    (["--draft", "=nopath"], "NAME=PATH"),
    (["--draft", "d=/no/such/dir", "--chain", "d>target"], "does not exist"),
    (["--prompt", ""], "--prompt is required"),
    (["--chat"], "no chat template"),
])
def test_bad_input_in_process(model_dir, tmp_path, capsys, args, message):
    directory = model_dir
    if args == ["--chat"]:                    # a model whose tokenizer has no chat template
        directory = tmp_path / "no_template"
        build_tiny_llama(seed=0).save_pretrained(directory)
        tokenizer = build_char_tokenizer()
        tokenizer.chat_template = None
        tokenizer.save_pretrained(directory)
    argv = ["generate", "--model", str(directory), "--prompt", "hi", *args]
    assert cli(argv) == EXIT_BAD_INPUT
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0]


def test_sampling_is_reproducible_under_a_seed(model_dir, capsys):
    argv = ["generate", "--model", str(model_dir), "--prompt", PROMPT, "--chain", "suffix>target", "--k", "3",
            "--temperature", "0.9", "--seed", "7", "--max-tokens", "20", "--json"]
    texts = []
    for _ in range(2):
        assert cli(argv) == 0
        texts.append(json.loads(capsys.readouterr().out)["text"])
    assert texts[0] == texts[1]


def test_generate_with_a_distilled_draft_checkpoint_matches_plain_greedy(model_dir, tmp_path, capsys):
    target = load_model(str(model_dir))
    manifest = DraftManifest(target_name=target.name, target_sha256=target.sha256, init_layers=[0],
                             architecture=architecture_of(target.model.config, 1), storage_dtype="float32")
    save_draft(build_draft(target.model, [0]), tmp_path / "draft", manifest)
    argv = ["generate", "--model", str(model_dir), "--prompt", PROMPT, "--draft", f"d={tmp_path / 'draft'}",
            "--chain", "ngram>d>target", "--k", "4", "--max-tokens", "24", "--json"]
    assert cli(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["chain"] == "ngram>d>target@k4"
    assert report["text"] == plain_greedy_text(PROMPT, 24)


def test_generate_args_parse_the_chain_and_drafts():
    cfg = GenerateArgs(prompt="x", chain="ngram > d > target", k=3, draft=["d=/some/path"])
    assert cfg.decision == Decision(("ngram", "d", "target"), 3)
    assert cfg.draft_paths == {"d": "/some/path"}
    assert cfg.sampling_params.is_greedy


def test_the_old_comma_chain_still_parses_with_a_warning():
    with pytest.warns(FutureWarning, match="deprecated; write 'ngram>d>target'"):
        cfg = GenerateArgs(prompt="x", chain="ngram,d,target", k=3, draft=["d=/some/path"])
    assert cfg.decision == Decision(("ngram", "d", "target"), 3)


def test_chains_lists_every_level(capsys):
    assert cli(["chains"]) == 0
    out = capsys.readouterr().out
    assert "ngram" in out and "suffix" in out and "target" in out and "int4" in out
