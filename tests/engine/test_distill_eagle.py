"""EAGLE head training: the features it learns from, a few steps that lower the loss, the CLI end to end."""

from __future__ import annotations

import json

import torch

from distill.draft import DistillConfig, train_draft
from distill.data import generate_teacher_data, render_prompt
from distill.eagle import EagleDistillConfig, capture_features
from distill.loss import evaluate
from engine.draft_checkpoint import load_draft
from engine.eagle_head import build_eagle_head
from distill.eagle_loss import eagle_loss
from engine.models import load_model
from engine.runner import ModelRunner
from tests.tiny_models import build_tiny_llama
from tests.engine.builders import run_training_cli

TEXTS = ["the cat sat on the mat.", "count: 1 2 3 4 5 6 7.", "hello there, how are you?", "a b c d e f g h",
         "one two three, one two three.", "red, green, blue and red."]


def feature_data(target, tokenizer):
    prompts = [("test", render_prompt(tokenizer, text, 32)) for text in TEXTS]
    return capture_features(target, generate_teacher_data(target, prompts, 8, 8, {2}), 8, budget=64)


def test_captured_features_are_the_targets_final_hidden_states(tokenizer):
    target = build_tiny_llama(seed=5)
    sequences = feature_data(target, tokenizer)
    runner = ModelRunner(target, 128)
    for seq in sequences[:3]:
        _, hidden = runner.forward([runner.cache.allocate_slot()], [seq.token_ids.tolist()], [1], return_hidden=True)
        assert (seq.features.float() - hidden[0]).abs().max() < 0.05 * hidden.abs().max()       # stored in bf16
        assert seq.topk_ids.shape[0] == len(seq.token_ids) - 1
    assert {len(s.token_ids) for s in sequences} == {len(s.features) for s in sequences}


def test_a_few_steps_raise_held_out_agreement(tokenizer):
    torch.manual_seed(0)
    target = build_tiny_llama(seed=5)
    sequences = feature_data(target, tokenizer)
    head = build_eagle_head(target)
    before = evaluate(head, sequences, loss_fn=eagle_loss)
    cfg = DistillConfig(steps=40, batch_tokens=256, lr=3e-3, warmup=2, eval_every=40, prompt_weight=1.0)
    train_draft(head, sequences, sequences, cfg, deadline=float("inf"), log=lambda _: None, loss_fn=eagle_loss)
    after = evaluate(head, sequences, loss_fn=eagle_loss)
    assert after["kl"] < before["kl"] and after["feature"] < before["feature"]
    assert after["top1"] > before["top1"]


def test_cli_writes_an_eagle_head_that_loads_onto_its_target(tmp_path, tokenizer):
    model_dir, out, done = run_training_cli("distill.eagle", tmp_path, tokenizer, "eagle")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "held-out top-1 agreement" in done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "eagle" and manifest["init_layers"] == [1] and manifest["vocab_subset_size"] == 32
    assert manifest["training"]["steps_done"] == 4
    target = load_model(str(model_dir))
    head = load_draft(out, target, "eagle")
    assert head.model.feature_fc.weight.shape == (64, 128)
    assert EagleDistillConfig().output_dir == "checkpoints/eagle"
