"""`python -m distill.eagle`: train an EAGLE feature head (engine/eagle_head.py) on the target.

Stages: the distillation sequences of distill/draft.py (ShareGPT, MT-bench, HumanEval prompts with
the target's greedy replies; never a Spec-Bench turn; cached under $SPECROUTE_CACHE/distill) -> one
batched target prefill per group of sequences, capturing the target's final hidden state (before
the final norm) and its top-k next-token law at every position (cached under
$SPECROUTE_CACHE/eagle) -> a one-layer head trained teacher-forced on smooth-L1 of features + KL
(distill/eagle_loss.py) -> `draft.safetensors` + `manifest.json` (kind "eagle") in `--output-dir`.
Held-out top-1 agreement with the target (the first drafted token) is printed as it goes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from cli.dataclass_args import parse_dataclass
from data.paths import data_dir
from distill.draft import (
    EVAL_RESERVE_S,
    DistillConfig,
    _teacher_data,
    begin_run,
    round_for_storage,
    teacher_precision,
    train_draft,
)
from distill.data import _top_k, frequency_ranked_vocab, split_held_out
from distill.loss import evaluate
from engine.draft_checkpoint import DraftManifest, architecture_of, save_draft
from engine.eagle_head import build_eagle_head
from distill.eagle_loss import FeatureSequence, eagle_loss
from engine.models import cache_dir
from engine.runner import ModelRunner

FEATURE_DTYPE = torch.bfloat16      # SmolLM2's pre-norm features reach magnitudes where fp16 is unsafe


@dataclass
class EagleDistillConfig(DistillConfig):
    """Settings of an EAGLE head training run (every field is a command-line flag)."""

    output_dir: str = field(default="checkpoints/eagle", metadata={
        "help": "output directory for draft.safetensors + manifest.json", "aliases": ["--out"]})
    init_layers: str = field(default="-1", metadata={"help": "the target layer the head's layer starts from (-1: the last)"})
    steps: int = field(default=900, metadata={"help": "optimizer steps (the time cap usually ends training first)"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate (cosine decay, linear warm-up)"})
    eval_every: int = field(default=100, metadata={"help": "held-out evaluation every N steps"})
    feature_weight: float = field(default=1.0, metadata={"help": "weight of the smooth-L1 feature loss beside the KL"})
    feature_noise: float = field(default=0.02, metadata={"help": "uniform noise on input features, times their RMS"})
    prefill_tokens: int = field(default=1024, metadata={"help": "padded positions per feature-capture prefill"})


def parse_config(argv: list[str] | None = None) -> EagleDistillConfig:
    return parse_dataclass(EagleDistillConfig, argv, __doc__.split("\n")[0], prog="python -m distill.eagle")


def _groups(sequences: list, budget: int) -> list[list[int]]:
    """Indices of sequences grouped by length so that rows x longest stays within `budget`."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].token_ids))
    groups, current = [], []
    for i in order:
        if current and len(sequences[i].token_ids) * (len(current) + 1) > budget:
            groups.append(current)
            current = []
        current.append(i)
    return groups + [current] if current else groups


@torch.no_grad()
def capture_features(model, sequences: list, top_k: int, budget: int, kernel: str = "dense") -> list[FeatureSequence]:
    """One batched target prefill per group: every position's final hidden state and top-k law."""
    max_len = max(len(s.token_ids) for s in sequences) + 1
    runner = ModelRunner(model, max_len, kernel=kernel)
    out: list[FeatureSequence | None] = [None] * len(sequences)
    groups = _groups(sequences, budget)
    for group in tqdm(groups, desc="target features", unit="batch", file=sys.stderr):
        slots = [runner.cache.allocate_slot() for _ in group]
        ids = [sequences[i].token_ids.tolist() for i in group]
        logits, hidden = runner.forward(slots, ids, [len(t) for t in ids], return_hidden=True)  # [b, t, v], [b, t, h]
        for row, i in enumerate(group):
            n, seq = len(ids[row]), sequences[i]
            top_ids, top_probs = _top_k(logits[row, : n - 1], top_k)
            out[i] = FeatureSequence(seq.source, seq.token_ids, top_ids, top_probs, seq.reply_start,
                                     features=hidden[row, :n].to(FEATURE_DTYPE).clone())
            runner.cache.free_slot(slots[row])
    return out


def _feature_data(cfg: EagleDistillConfig, target, sequences: list, log) -> list[FeatureSequence]:
    """capture_features, from the cache when this target already ran over the same sequences."""
    digest = hashlib.sha256()
    for seq in sequences:
        digest.update(seq.token_ids.numpy().tobytes())
    key = json.dumps({"target": target.sha256, "tokens": digest.hexdigest(), "top_k": cfg.top_k, "version": 1,
                      "teacher": teacher_precision(cfg).name})
    file = cache_dir() / "eagle" / f"features-{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"
    if cfg.use_cache and file.exists():
        log(f"target features from {file}")
        return torch.load(file, weights_only=False)
    made = capture_features(target.model, sequences, cfg.top_k, cfg.prefill_tokens, teacher_precision(cfg).kernel)
    if cfg.use_cache:
        file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(made, file)
    return made


def main(cfg: EagleDistillConfig) -> dict:
    started, deadline, log, target = begin_run(cfg, "eagle")
    num_layers = len(target.model.model.layers)
    init_layer = cfg.layer_list[0] % num_layers if len(cfg.layer_list) == 1 else None
    if init_layer is None:
        raise ValueError(f"an EAGLE head has one layer: --init-layers takes one index, got {cfg.init_layers!r}")
    log(f"target {target.name} ({num_layers} layers), data from {data_dir()}")
    sequences = _feature_data(cfg, target, _teacher_data(cfg, target, log), log)
    data_seconds = time.perf_counter() - started
    train, held_out = split_held_out(sequences, cfg.held_out, cfg.seed)
    vocab = target.model.config.vocab_size
    subset = frequency_ranked_vocab(train, vocab, cfg.vocab_subset) if 0 < cfg.vocab_subset < vocab else None
    head = build_eagle_head(target.model, init_layer, subset)
    num_tokens = sum(len(s.token_ids) for s in sequences)
    log(f"data: {len(train)} train / {len(held_out)} held-out sequences, {num_tokens} tokens, {data_seconds:.0f}s; "
        f"head layer from target layer {init_layer}, vocabulary {subset.numel() if subset is not None else vocab}")
    loss_fn = functools.partial(eagle_loss, feature_weight=cfg.feature_weight, feature_noise=cfg.feature_noise)
    result = train_draft(head, train, held_out, cfg, deadline - EVAL_RESERVE_S, log, loss_fn=loss_fn)
    if cfg.storage_dtype != "float32":
        round_for_storage(head, cfg.storage_dtype)
        result["stored_eval"] = evaluate(head, held_out, loss_fn=loss_fn)
    final = result.get("stored_eval", result["curve"][-1])
    training = {
        "sources": list(cfg.source_list), "num_sequences": len(sequences), "num_train": len(train),
        "num_held_out": len(held_out), "num_tokens": num_tokens,
        "excluded": "every Spec-Bench turn (MT-bench's 80 questions are Spec-Bench rows 81-160)",
        "config": dataclasses.asdict(cfg), "data_seconds": round(data_seconds, 1), **result}
    manifest = DraftManifest(target_name=target.name, target_sha256=target.sha256, kind="eagle",
                             architecture=architecture_of(target.model.config, 1), init_layers=[init_layer],
                             storage_dtype=cfg.storage_dtype, training=training)
    training["total_seconds"] = round(time.perf_counter() - started, 1)
    path = save_draft(head, cfg.output_dir, manifest)
    log(f"saved {path}: held-out top-1 agreement {final['top1_reply']:.3f} on reply positions, "
        f"{final['top1']:.3f} on all; kl {final['kl']:.3f}, feature loss {final['feature']:.4f}; "
        f"{training['total_seconds']:.0f}s total")
    return training


if __name__ == "__main__":
    from cli.missing_data import exit_on_missing_data
    with exit_on_missing_data():
        main(parse_config())
