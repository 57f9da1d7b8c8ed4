"""Distillation: the sparse KL, the data rules, a few steps that lower the KL, the CLI end to end."""

from __future__ import annotations

import json

import pytest
import torch

from distill.draft import DistillConfig, parse_config, train_draft
from distill.data import (frequency_ranked_vocab, generate_teacher_data, render_prompt,
                                 spec_bench_turns, split_held_out, training_prompts)
from distill.loss import evaluate, position_kl, sparse_kl
from engine.draft_checkpoint import load_draft
from engine.draft_model import build_draft
from engine.models import load_model
from tests.tiny_models import build_tiny_llama
from tests.engine.builders import run_training_cli

TEXTS = ["the cat sat on the mat and the dog sat on the log.", "count: 1 2 3 4 5 6 7 8 9.",
         "hello there, how are you today? i am fine.", "write a poem about the sea and the sky.",
         "def add(a, b): return a + b", "a b c d e f g h i j k", "what is 12 times 7? it is 84.",
         "the quick brown fox jumps over the lazy dog.", "one two three, one two three.",
         "please list three colors: red, green, blue."]


def test_sparse_kl_equals_the_exact_kl_when_every_token_is_kept():
    generator = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, 12, generator=generator) * 2, -1)
    log_q = torch.log_softmax(torch.randn(6, 12, generator=generator), -1)
    ids = torch.argsort(p, dim=-1, descending=True)
    exact = (p * (p.log() - log_q)).sum(-1)
    torch.testing.assert_close(position_kl(log_q, ids, p.gather(1, ids), None), exact, rtol=1e-5, atol=1e-6)
    # kept top-3 only: a coarser partition, so a lower bound that is still >= 0
    coarse = position_kl(log_q, ids[:, :3], p.gather(1, ids[:, :3]), None)
    assert (coarse >= -1e-6).all() and (coarse <= exact + 1e-6).all()


def test_sparse_kl_puts_tokens_outside_a_reduced_vocabulary_in_the_rest_bucket():
    p = torch.tensor([[0.5, 0.3, 0.2, 0.0]])
    subset = torch.tensor([0, 2, 3])                                   # token 1 cannot be emitted
    index = torch.tensor([0, -1, 1, 2])
    log_q = torch.log(torch.tensor([[0.5, 0.2, 0.3]]))
    kl = position_kl(log_q, torch.tensor([[0, 1, 2]]), torch.tensor([[0.5, 0.3, 0.2]]), index)
    # partition {0}, {2}, rest = {1, 3}: p = (.5, .2, .3), q = (.5, .2, .3) -> KL 0
    assert subset.numel() == 3 and abs(float(kl)) < 1e-6


def test_training_prompts_never_contain_the_benchmark_prompts():
    reserved = spec_bench_turns()
    assert len(reserved) > 480
    prompts = training_prompts()
    assert {p.source for p in prompts} == {"sharegpt", "humaneval"}      # MT-bench == Spec-Bench rows 81-160
    assert len(prompts) > 600
    assert not reserved & {p.text.strip() for p in prompts}
    with pytest.raises(ValueError, match="unknown data source"):
        training_prompts(("sharegpt", "spec_bench"))


def test_frequency_ranked_vocab_keeps_the_most_frequent_tokens(tokenizer):
    target = build_tiny_llama(seed=5)
    prompts = [("t", render_prompt(tokenizer, text, 64)) for text in TEXTS[:3]]
    sequences = generate_teacher_data(target, prompts, 8, 5, {2})
    subset = frequency_ranked_vocab(sequences, 45, 10)
    counts = torch.bincount(torch.cat([s.token_ids for s in sequences]), minlength=45)
    assert subset.tolist() == sorted(subset.tolist()) and len(subset) == 10
    assert int(counts.argmax()) in subset.tolist()
    with pytest.raises(ValueError, match="subset size"):
        frequency_ranked_vocab(sequences, 45, 0)


def test_a_few_distillation_steps_lower_the_held_out_kl(tokenizer):
    torch.manual_seed(0)
    target = build_tiny_llama(seed=11, num_layers=3, init_std=0.3)
    prompts = [("t", render_prompt(tokenizer, text, 64)) for text in TEXTS]
    sequences = generate_teacher_data(target, prompts, 24, 8, {2}, batch_size=4)
    assert all(s.topk_ids.shape[0] == len(s.token_ids) - 1 for s in sequences)
    train, held_out = split_held_out(sequences, 0.2, seed=0)
    draft = build_draft(target, [0], frequency_ranked_vocab(train, 45, 40))
    before = evaluate(draft, held_out)
    cfg = DistillConfig(steps=40, batch_tokens=256, lr=3e-3, warmup=2, eval_every=20)
    result = train_draft(draft, train, held_out, cfg, deadline=float("inf"), log=lambda message: None)
    after = evaluate(draft, held_out)
    assert [point["step"] for point in result["curve"]] == [0, 20, 40]
    assert after["kl"] < 0.8 * before["kl"], (before, after)
    assert result["curve"][-1]["kl"] == after["kl"]


def test_prompt_weight_zero_trains_on_reply_positions_only(tokenizer):
    target = build_tiny_llama(seed=6)
    sequences = generate_teacher_data(target, [("t", render_prompt(tokenizer, TEXTS[0], 64))], 6, 5, {2})
    draft = build_draft(target, [0])
    with torch.no_grad():
        reply_only, stats = sparse_kl(draft, sequences, prompt_weight=0.0)
        everything, _ = sparse_kl(draft, sequences, prompt_weight=1.0)
    assert float(reply_only) == pytest.approx(stats["kl_reply_sum"] / stats["num_reply"], rel=1e-5)
    assert float(everything) == pytest.approx(stats["kl_sum"] / stats["num"], rel=1e-5)
    assert stats["num_reply"] == 6 and stats["num"] == len(sequences[0].token_ids) - 1


def test_config_rejects_bad_values(capsys):
    with pytest.raises(ValueError, match="init_layers"):
        DistillConfig(init_layers="0,x")
    with pytest.raises(ValueError, match="held_out"):
        DistillConfig(held_out=1.5)
    with pytest.raises(ValueError, match="prompt_weight"):
        DistillConfig(prompt_weight=2.0)
    with pytest.raises(SystemExit) as exit_info:        # a usage error on the command line, not a traceback
        parse_config(["--steps", "0"])
    assert exit_info.value.code == 2 and "steps must be > 0" in capsys.readouterr().err
    assert parse_config(["--no-use_cache", "--vocab_subset", "0"]).use_cache is False


def test_cli_writes_a_draft_that_loads_onto_its_target(tmp_path, tokenizer):
    model_dir, out, done = run_training_cli("distill.draft", tmp_path, tokenizer, "draft", "--init_layers", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "held-out kl" in done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["vocab_subset_size"] == 32 and manifest["init_layers"] == [1]
    assert manifest["training"]["steps_done"] == 4 and len(manifest["training"]["curve"]) == 3
    target = load_model(str(model_dir))
    assert manifest["target_sha256"] == target.sha256
    draft = load_draft(out, target)
    assert draft.model.embed_tokens.weight is target.model.model.embed_tokens.weight
