"""make_dummy-style builders shared by the engine tests: engines, prompts, reference decoding.

Everything is built in code from the tiny models of `tests.tiny_models`; nothing is downloaded.
"""

from __future__ import annotations

import copy
import os
import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from engine import Decision, Engine, EngineConfig, RequestOutput, SamplingParams, StaticRouter
from tests.tiny_models import CHARACTERS, build_tiny_llama

REPO = Path(__file__).resolve().parents[2]

PHRASES = ["hello world", "the cat sat", "abc abc", "one two one", "ababab", "xyz", "4 8 15 16 23 42"]


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models run fastest on one thread; oversubscribed threads on a shared 2-core box
    slow them down tens of times. Restores the previous setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_prompts(n: int, seed: int = 0) -> list[str]:
    """`n` prompts of 3..40 characters: repeated phrases (n-gram and suffix drafters find
    matches) mixed with random characters (they mostly do not)."""
    rng = random.Random(seed)
    letters = CHARACTERS.replace("\n", "")
    prompts = []
    for i in range(n):
        if i % 3 == 2:
            prompts.append("".join(rng.choice(letters) for _ in range(rng.randint(3, 25))))
        else:
            phrase = rng.choice(PHRASES)
            prompts.append(" ".join([phrase] * rng.randint(1, 3)) + rng.choice(["", " ", "."]))
    return prompts


def make_dummy_engine(target, tokenizer, drafts=None, chain: Sequence[str] = ("target",), k: int = 0,
                      router=None, p_min: float = 0.0, **config) -> Engine:
    """An engine over the tiny target; a StaticRouter(chain, k, p_min) unless `router` is given."""
    config.setdefault("max_model_len", 256)
    config.setdefault("max_num_seqs", 64)
    return Engine(target, tokenizer, EngineConfig(**config), drafts=drafts,
                  router=router or StaticRouter(Decision(tuple(chain), k, p_min)))


def with_eos(model, eos_token_id: int):
    """A copy of `model` whose generation config also stops at `eos_token_id` (the engine
    stops at the union of the model's and the tokenizer's EOS ids)."""
    clone = copy.deepcopy(model)
    clone.generation_config.eos_token_id = eos_token_id
    return clone


def run_engine(engine: Engine, prompts: list, params: SamplingParams | list[SamplingParams],
               on_step: Callable[[Engine, list[RequestOutput]], None] | None = None) -> list[RequestOutput]:
    """Like Engine.generate, with a per-row params list and a hook called after every step."""
    params_list = params if isinstance(params, list) else [params] * len(prompts)
    ids = [engine.add_request(p, sp) for p, sp in zip(prompts, params_list)]
    final: dict[str, RequestOutput] = {}
    while engine.has_unfinished:
        outputs = engine.step()
        if on_step is not None:
            on_step(engine, outputs)
        for output in outputs:
            if output.finished:
                final[output.request_id] = output
    return [final[i] for i in ids]


def plain_decode(target, tokenizer, prompts: list, params: SamplingParams, **config) -> list[RequestOutput]:
    """The reference: plain decoding (chain ("target",), K = 0) of every prompt."""
    return make_dummy_engine(target, tokenizer, **config).generate(prompts, params)


def truncated_in_draft(counter: dict) -> Callable[[Engine, list[RequestOutput]], None]:
    """A run_engine hook counting rows whose step produced more tokens than were committed
    (a stop condition fell inside the verified draft)."""

    def observe(engine: Engine, outputs: list[RequestOutput]) -> None:
        by_id = {o.request_id: o for o in outputs}
        for request_id, result in zip(engine.last_step.request_ids, engine.last_step.results):
            output = by_id[request_id]
            if output.finished and len(output.new_token_ids) < len(result.tokens):
                counter["n"] = counter.get("n", 0) + 1

    return observe


def assert_same_outputs(got: list[RequestOutput], want: list[RequestOutput], label: str = "") -> None:
    """Token-identical outputs, same finish reason and text, row by row."""
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.output_token_ids == b.output_token_ids, f"{label} row {i}: tokens differ"
        assert a.finish_reason == b.finish_reason, f"{label} row {i}: {a.finish_reason} != {b.finish_reason}"
        assert a.text == b.text, f"{label} row {i}: text {a.text!r} != {b.text!r}"


def with_catch_up(engine: Engine, threshold: int, budget: int) -> Engine:
    """`engine` with every model level's catch-up threshold and token budget replaced (before any
    request), so that tiny prompts exercise catch-up and chunked prefill."""
    for level in engine.levels.values():
        level.catch_up_threshold, level.token_budget = threshold, budget
    return engine


def make_long_prompts(n: int, seed: int = 0) -> list[str]:
    """`n` prompts of 60..150 characters (tokens, for the character tokenizer)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(PHRASES) for _ in range(40))[: rng.randint(60, 150)] for _ in range(n)]


def run_training_cli(module: str, tmp_path: Path, tokenizer, out_name: str, *flags: str):
    """Save a tiny 2-layer target under `tmp_path`, run `python -m module` on it (a small teacher
    sample, 4 steps, its own cache) writing `tmp_path / out_name`; (model dir, out dir, the run)."""
    model_dir = tmp_path / "tiny-target"
    build_tiny_llama(seed=2, num_layers=2).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out = tmp_path / out_name
    env = dict(os.environ, SPECROUTE_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", module, "--model", str(model_dir), "--output-dir", str(out), *flags,
           "--vocab_subset", "32", "--num_prompts", "12", "--max_tokens", "8", "--max_prompt_tokens", "32",
           "--steps", "4", "--eval_every", "2", "--num_threads", "1"]
    done = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return model_dir, out, done
