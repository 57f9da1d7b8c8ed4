"""`python -m distill.draft`: distil a few-layer draft from the target (KL to its next-token law).

Stages: training prompts (ShareGPT, MT-bench, HumanEval; never a Spec-Bench turn, which the
benchmarks use) -> the target's greedy replies and its top-k next-token probabilities at every position
(cached under $SPECROUTE_CACHE/distill) -> a draft initialised from some target layers, trained
with AdamW on the KL to the target -> `draft.safetensors` + `manifest.json` in `--output-dir`.
Held-out KL and top-1 agreement are printed as it goes.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from cli.dataclass_args import parse_dataclass
from data.paths import data_dir
from distill.data import (
    SOURCES,
    frequency_ranked_vocab,
    generate_teacher_data,
    render_prompt,
    split_held_out,
    training_prompts,
)
from distill.loss import evaluate, sparse_kl
from engine.config import num_threads_field
from engine.draft_checkpoint import STORAGE_DTYPES, DraftManifest, architecture_of, save_draft
from engine.draft_model import build_draft
from engine.models import cache_dir, load_model
from engine.precision import Precision, PrecisionArgs, prepare_model, resolve_precision

EVAL_RESERVE_S = 45.0       # of --max_minutes, kept for the last evaluations and the save
GENERATION_BATCH = 32       # prompts the target answers together (and the unit of the teacher cache)


@dataclass
class DistillConfig(PrecisionArgs):
    """Settings of a distillation run (every field is a command-line flag)."""

    model: str = field(default="default", metadata={"help": "target: 'default' (embedded SmolLM2), an HF dir or a .gguf"})
    output_dir: str = field(default="checkpoints/draft", metadata={
        "help": "output directory for draft.safetensors + manifest.json", "aliases": ["--out"]})
    init_layers: str = field(default="0,1", metadata={"help": "comma-separated target layers the draft layers start from"})
    vocab_subset: int = field(default=16384, metadata={"help": "FR-Spec reduced vocabulary size; 0 = full vocabulary"})
    sources: str = field(default=",".join(SOURCES), metadata={"help": "training prompt sources"})
    num_prompts: int = field(default=576, metadata={"help": "prompts whose target replies form the data"})
    max_prompt_tokens: int = field(default=160, metadata={"help": "user turns are cut to this many tokens"})
    max_tokens: int = field(default=64, metadata={"help": "length of the target's greedy replies",
                                                  "aliases": ["--max-new-tokens"]})
    top_k: int = field(default=32, metadata={"help": "target probabilities kept per position (sparse KL)"})
    held_out: float = field(default=0.1, metadata={"help": "fraction of sequences held out for evaluation"})
    steps: int = field(default=400, metadata={"help": "optimizer steps"})
    batch_tokens: int = field(default=1024, metadata={"help": "tokens per batch (sequences packed by length)"})
    lr: float = field(default=3e-3, metadata={"help": "AdamW peak learning rate (cosine decay, linear warm-up)"})
    warmup: int = field(default=30, metadata={"help": "warm-up steps"})
    prompt_weight: float = field(default=0.3, metadata={"help": "loss weight of prompt positions (reply positions weigh 1)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    eval_every: int = field(default=50, metadata={"help": "held-out evaluation every N steps"})
    max_minutes: float = field(default=20.0, metadata={"help": "wall-clock cap of the whole run; training stops early to meet it"})
    storage_dtype: str = field(default="bfloat16", metadata={"help": "dtype of the saved weights (loaded as float32)",
                                                             "choices": list(STORAGE_DTYPES)})
    num_threads: int = num_threads_field()
    seed: int = field(default=0, metadata={"help": "seed of prompt choice, split and initial batches"})
    use_cache: bool = field(default=True, metadata={"help": "reuse teacher data cached for the same target and settings"})

    def __post_init__(self) -> None:
        for name in ("num_prompts", "max_prompt_tokens", "max_tokens", "top_k", "steps", "batch_tokens", "eval_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.held_out < 1:
            raise ValueError(f"held_out must be in (0, 1), got {self.held_out}")
        if not 0 <= self.prompt_weight <= 1:
            raise ValueError(f"prompt_weight must be in [0, 1], got {self.prompt_weight}")
        if self.vocab_subset < 0 or self.lr <= 0 or self.max_minutes <= 0 or self.warmup < 0:
            raise ValueError("vocab_subset must be >= 0 and lr, max_minutes > 0, warmup >= 0")
        try:
            self.layer_list = [int(i) for i in self.init_layers.split(",")]
        except ValueError:
            raise ValueError(f"init_layers must be comma-separated integers, got {self.init_layers!r}") from None
        self.source_list = tuple(s.strip() for s in self.sources.split(",") if s.strip())


def parse_config(argv: list[str] | None = None) -> DistillConfig:
    return parse_dataclass(DistillConfig, argv, __doc__.split("\n")[0], prog="python -m distill.draft")


def encoded_prompts(cfg: DistillConfig, tokenizer) -> list[tuple[str, list[int]]]:
    """The run's (source, chat-templated prompt ids): `num_prompts` of the sources, shuffled by seed."""
    prompts = training_prompts(cfg.source_list)
    random.Random(cfg.seed).shuffle(prompts)
    return [(p.source, render_prompt(tokenizer, p.text, cfg.max_prompt_tokens)) for p in prompts[: cfg.num_prompts]]


def teacher_cache_file(target_sha256: str, chunk: list[tuple[str, list[int]]], cfg: DistillConfig):
    """Where one generation batch's teacher data is cached: keyed by target, prompts and settings,
    so a run with more prompts (same seed) reuses the batches an earlier run made."""
    fields = dict(target=target_sha256, prompts=chunk, max_new_tokens=cfg.max_tokens, top_k=cfg.top_k, version=3,
                  teacher=teacher_precision(cfg).name)
    key = hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:20]
    return cache_dir() / "distill" / f"teacher-{key}.pt"


def teacher_precision(cfg: DistillConfig) -> Precision:
    """The teacher's forward path (--dtype, --kernel, ...); the draft always trains in fp32."""
    return resolve_precision(cfg.dtype, cfg.kernel, cfg.weights, cfg.device)


def _teacher_data(cfg: DistillConfig, target, log) -> list:
    """Target replies + sparse targets per batch of prompts, each batch from the cache when made before."""
    tokenizer = target.tokenizer
    precision = teacher_precision(cfg)
    teacher = target.model
    if precision.dtype != torch.float32 or precision.device.type != "cpu":
        # a copy: the draft shares the fp32 target's embedding and head and trains against them
        teacher = prepare_model(copy.deepcopy(target.model), precision)
    encoded = encoded_prompts(cfg, tokenizer)
    eos = {t for t in (tokenizer.eos_token_id, target.model.config.eos_token_id) if t is not None}
    sequences, num_cached = [], 0
    bar = tqdm(total=len(encoded), desc="teacher data", unit="seq", file=sys.stderr)
    for start in range(0, len(encoded), GENERATION_BATCH):
        chunk = encoded[start: start + GENERATION_BATCH]
        cache_file = teacher_cache_file(target.sha256, chunk, cfg)
        if cfg.use_cache and cache_file.exists():
            made = torch.load(cache_file, weights_only=False)
            num_cached += len(made)
        else:
            made = generate_teacher_data(teacher, chunk, cfg.max_tokens, cfg.top_k, eos,
                                         batch_size=GENERATION_BATCH, kernel=precision.kernel)
            if cfg.use_cache:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                torch.save(made, cache_file)
        sequences.extend(made)
        bar.update(len(chunk))
    bar.close()
    log(f"teacher data: {len(sequences)} sequences, {num_cached} of them cached in {cache_dir() / 'distill'}")
    return sequences


def _batches(sequences: list, batch_tokens: int, rng: random.Random) -> list[list]:
    """Sequences grouped by similar length, each group padded to at most `batch_tokens`."""
    ordered = sorted(sequences, key=lambda s: len(s.token_ids))
    groups, current = [], []
    for seq in ordered:
        if current and len(seq.token_ids) * (len(current) + 1) > batch_tokens:
            groups.append(current)
            current = []
        current.append(seq)
    if current:
        groups.append(current)
    rng.shuffle(groups)
    return groups


def _lr_at(step: int, time_fraction: float, cfg: DistillConfig) -> float:
    """Linear warm-up, then cosine decay to 10% over the steps or the time left, whichever runs out first."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, max((step - cfg.warmup) / max(1, cfg.steps - cfg.warmup), time_fraction))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(progress * math.pi)))


def train_draft(draft, train: list, held_out: list, cfg: DistillConfig, deadline: float, log=print,
                loss_fn=sparse_kl) -> dict:
    """AdamW on `loss_fn` (the sparse KL; an EAGLE head's is distill/eagle_loss.py); returns the
    curve (step, seconds, train loss, held-out metrics)."""
    params = [p for p in draft.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed)
    curve, queue = [], []
    start, cpu_start = time.perf_counter(), time.process_time()
    metrics = evaluate(draft, held_out, loss_fn=loss_fn)
    curve.append(dict(step=0, seconds=0.0, cpu_seconds=0.0, train_kl=None, **metrics))
    log(f"step 0: held-out kl {metrics['kl']:.3f}, top-1 reply {metrics['top1_reply']:.3f}")
    running, stopped_early = None, False
    bar = tqdm(range(cfg.steps), desc="distill", unit="step", file=sys.stderr)
    for step in bar:
        now = time.perf_counter()
        if now > deadline:
            stopped_early = True
            log(f"time cap reached after {step} steps; stopping")
            break
        if not queue:
            queue = _batches(train, cfg.batch_tokens, rng)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, (now - start) / max(deadline - start, 1e-9), cfg)
        draft.train()
        loss, _ = loss_fn(draft, queue.pop(), cfg.prompt_weight, with_stats=False)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        bar.set_postfix(kl=f"{running:.3f}")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            metrics = evaluate(draft, held_out, loss_fn=loss_fn)
            curve.append(dict(step=step + 1, seconds=round(time.perf_counter() - start, 1),
                              cpu_seconds=round(time.process_time() - cpu_start, 1), train_kl=running, **metrics))
            log(f"step {step + 1}: train kl {running:.3f}, held-out kl {metrics['kl']:.3f}, "
                f"top-1 reply {metrics['top1_reply']:.3f}, top-1 all {metrics['top1']:.3f}")
    bar.close()
    draft.eval()
    if stopped_early and curve[-1]["step"] != step:
        metrics = evaluate(draft, held_out, loss_fn=loss_fn)
        curve.append(dict(step=step, seconds=round(time.perf_counter() - start, 1),
                          cpu_seconds=round(time.process_time() - cpu_start, 1), train_kl=running, **metrics))
    return dict(curve=curve, stopped_early=stopped_early, steps_done=curve[-1]["step"],
                train_seconds=round(time.perf_counter() - start, 1),
                train_cpu_seconds=round(time.process_time() - cpu_start, 1))


def round_for_storage(draft, storage_dtype: str) -> None:
    """Round the trained weights as `save_draft` stores them, so that evaluation sees what ships."""
    with torch.no_grad():
        for param in draft.parameters():
            if param.requires_grad:
                param.copy_(param.to(STORAGE_DTYPES[storage_dtype]).float())


def begin_run(cfg, tag: str):
    """What every training command starts with: threads, the seed, its deadline, a logger that
    stamps wall and CPU time, and the target. Returns (started, deadline, log, target)."""
    started = time.perf_counter()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)

    def log(message: str) -> None:
        tqdm.write(f"[{tag} {time.perf_counter() - started:6.0f}s wall, {time.process_time():6.0f}s cpu] {message}",
                   file=sys.stderr)

    target = load_model(cfg.model)
    if target.tokenizer is None:
        raise ValueError(f"target {cfg.model} has no tokenizer; training needs one")
    return started, started + 60 * cfg.max_minutes, log, target


def main(cfg: DistillConfig) -> dict:
    started, deadline, log, target = begin_run(cfg, "distill")
    log(f"target {target.name} ({len(target.model.model.layers)} layers), data from {data_dir()}")
    sequences = _teacher_data(cfg, target, log)
    data_seconds, data_cpu_seconds = time.perf_counter() - started, time.process_time()
    train, held_out = split_held_out(sequences, cfg.held_out, cfg.seed)
    vocab = target.model.config.vocab_size
    subset = frequency_ranked_vocab(train, vocab, cfg.vocab_subset) if 0 < cfg.vocab_subset < vocab else None
    draft = build_draft(target.model, cfg.layer_list, subset)
    num_tokens = sum(len(s.token_ids) for s in sequences)
    num_reply = sum(len(s.token_ids) - 1 - s.reply_start for s in sequences)
    log(f"data: {len(train)} train / {len(held_out)} held-out sequences, {num_tokens} tokens "
        f"({num_reply} target-generated), {data_seconds:.0f}s; draft layers {cfg.layer_list}, "
        f"vocabulary {subset.numel() if subset is not None else vocab}")
    result = train_draft(draft, train, held_out, cfg, deadline - EVAL_RESERVE_S, log)
    if cfg.storage_dtype != "float32":      # evaluate exactly what is shipped: weights rounded for storage
        round_for_storage(draft, cfg.storage_dtype)
        result["stored_eval"] = evaluate(draft, held_out)
        log(f"after rounding to {cfg.storage_dtype}: held-out kl {result['stored_eval']['kl']:.3f}, "
            f"top-1 reply {result['stored_eval']['top1_reply']:.3f}")
    training = dict(
        sources=list(cfg.source_list), num_sequences=len(sequences), num_train=len(train), num_held_out=len(held_out),
        num_tokens=num_tokens, num_reply_tokens=num_reply, excluded="every Spec-Bench turn (MT-bench's 80 questions are Spec-Bench rows 81-160)",
        config={k: v for k, v in dataclasses.asdict(cfg).items()},
        data_seconds=round(data_seconds, 1), data_cpu_seconds=round(data_cpu_seconds, 1), **result)
    manifest = DraftManifest(target_name=target.name, target_sha256=target.sha256,
                             architecture=architecture_of(target.model.config, len(cfg.layer_list)),
                             init_layers=cfg.layer_list, storage_dtype=cfg.storage_dtype, training=training)
    training["total_seconds"] = round(time.perf_counter() - started, 1)
    training["total_cpu_seconds"] = round(time.process_time(), 1)
    path = save_draft(draft, cfg.output_dir, manifest)
    final = result["curve"][-1]
    log(f"saved {path}: held-out kl {final['kl']:.3f}, top-1 reply {final['top1_reply']:.3f}, "
        f"{training['total_seconds']:.0f}s total")
    return training


if __name__ == "__main__":
    from cli.missing_data import exit_on_missing_data
    with exit_on_missing_data():
        main(parse_config())
