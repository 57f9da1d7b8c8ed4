"""Distillation data: training prompts from ../shared/data and the target's sparse next-token targets.

Every training sequence is a chat-templated prompt (dataset text) followed by the target's greedy
reply (target-generated text). The target's next-token distribution at every position is kept
sparsely as its top-k probabilities, so training the draft never runs the target again.
No Spec-Bench turn is ever trained on: the benchmarks and the environment sample any Spec-Bench
row, and MT-bench's 80 questions are the Spec-Bench mt_bench rows (same ids 81-160, same turns),
so the MT-bench source is filtered to nothing unless the data directory holds other MT-bench rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from data.jsonl import read_jsonl
from data.paths import data_dir
from data.spec_bench import load_spec_bench, spec_bench_path
from engine.runner import ModelRunner

SOURCES = ("sharegpt", "mt_bench", "humaneval")


def spec_bench_turns(directory: Path | None = None) -> set[str]:
    """Every user turn of every Spec-Bench row (stripped): text that is never trained on."""
    return {turn.strip() for question in load_spec_bench(spec_bench_path(directory)) for turn in question.turns}


@dataclass(frozen=True)
class TrainingPrompt:
    source: str
    text: str


def training_prompts(sources: tuple[str, ...] = SOURCES, directory: Path | None = None) -> list[TrainingPrompt]:
    """User turns from ShareGPT, MT-bench (both turns, each on its own) and HumanEval, minus any
    text that is a Spec-Bench turn. Raises ValueError for an unknown source."""
    directory = directory or data_dir()
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown data source(s) {sorted(unknown)}; choose from {', '.join(SOURCES)}")
    if not directory.is_dir():
        raise FileNotFoundError(f"data directory {directory} not found (set SPECROUTE_DATA)")
    reserved = spec_bench_turns(directory)
    prompts: list[TrainingPrompt] = []
    if "sharegpt" in sources:
        for row in read_jsonl(directory / "sharegpt" / "ShareGPT_V3_filtered_500.jsonl"):
            prompts.append(TrainingPrompt("sharegpt", row["conversations"][0]["value"]))
    if "mt_bench" in sources:
        for row in read_jsonl(directory / "mt_bench" / "question.jsonl"):
            prompts.extend(TrainingPrompt("mt_bench", turn) for turn in row["turns"])
    if "humaneval" in sources:
        for row in read_jsonl(directory / "humaneval" / "HumanEval.jsonl.gz"):
            text = "Complete this Python function.\n\n" + row["prompt"]
            prompts.append(TrainingPrompt("humaneval", text))
    seen: set[str] = set()
    kept = []
    for prompt in prompts:
        key = prompt.text.strip()
        if key and key not in reserved and key not in seen:
            seen.add(key)
            kept.append(prompt)
    return kept


@dataclass
class TeacherSequence:
    """One training sequence and the target's sparse next-token distribution at each position.

    `topk_ids[t]`, `topk_probs[t]` describe p(token t + 1 | tokens <= t); the last token has none.
    """

    source: str
    token_ids: torch.Tensor       # [n] int64
    topk_ids: torch.Tensor        # [n - 1, k] int32
    topk_probs: torch.Tensor      # [n - 1, k] float16
    reply_start: int              # first position whose next token the target generated

    @property
    def num_positions(self) -> int:
        return self.topk_ids.shape[0]


def render_prompt(tokenizer, text: str, max_prompt_tokens: int) -> list[int]:
    """Chat-template a user turn (generation prompt added), the turn cut to `max_prompt_tokens`."""
    turn_ids = tokenizer.encode(text, add_special_tokens=False)[:max_prompt_tokens]
    message = [{"role": "user", "content": tokenizer.decode(turn_ids)}]
    encoded = tokenizer.apply_chat_template(message, add_generation_prompt=True, tokenize=True)
    ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
    return list(ids)


def _top_k(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.softmax(logits.float(), dim=-1)
    values, indices = probs.topk(k, dim=-1)
    return indices.to(torch.int32), values.to(torch.float16)


def generate_teacher_data(model, prompts: list[tuple[str, list[int]]], max_new_tokens: int, top_k: int,
                          eos_ids: set[int], batch_size: int = 16, kernel: str = "dense") -> list[TeacherSequence]:
    """Greedy replies of `model` to each (source, prompt ids), with the top-k targets of every position.

    The prompt's targets come from its prefill, the reply's from the decode steps that produced it,
    so the target runs once over every token.
    """
    if top_k < 1 or max_new_tokens < 1:
        raise ValueError("top_k and max_new_tokens must be >= 1")
    vocab = model.config.vocab_size
    k = min(top_k, vocab)
    max_len = max(len(p) for _, p in prompts) + max_new_tokens + 1
    runner = ModelRunner(model, max_len, kernel=kernel)
    sequences: list[TeacherSequence] = []
    for start in range(0, len(prompts), batch_size):
        group = prompts[start: start + batch_size]
        slots = [runner.cache.allocate_slot() for _ in group]
        ids = [list(p) for _, p in group]
        tops_i: list[list[torch.Tensor]] = [[] for _ in group]
        tops_p: list[list[torch.Tensor]] = [[] for _ in group]
        next_tokens = []
        for row, (slot, prompt) in enumerate(zip(slots, ids)):
            logits = runner.forward([slot], [prompt], [len(prompt)])[0]          # [p, vocab]
            top_i, top_p = _top_k(logits, k)
            tops_i[row].append(top_i)
            tops_p[row].append(top_p)
            next_tokens.append(int(logits[-1].argmax()))
        reply_starts = [len(p) - 1 for p in ids]
        active = list(range(len(group)))
        for step in range(max_new_tokens):
            for row in active:
                ids[row].append(next_tokens[row])
            active = [r for r in active if next_tokens[r] not in eos_ids and step + 1 < max_new_tokens]
            if not active:
                break
            logits = runner.forward([slots[r] for r in active], [[next_tokens[r]] for r in active],
                                    [1] * len(active))[:, 0]                        # [b, vocab]
            top_i, top_p = _top_k(logits, k)
            for j, row in enumerate(active):
                tops_i[row].append(top_i[j: j + 1])
                tops_p[row].append(top_p[j: j + 1])
                next_tokens[row] = int(logits[j].argmax())
        for row, (source, _) in enumerate(group):
            sequences.append(TeacherSequence(source, torch.tensor(ids[row], dtype=torch.long),
                                             torch.cat(tops_i[row]), torch.cat(tops_p[row]), reply_starts[row]))
            runner.cache.free_slot(slots[row])
    return sequences


def split_held_out(sequences: list[TeacherSequence], fraction: float, seed: int) -> tuple[list, list]:
    """A deterministic split by sequence: (train, held_out)."""
    order = list(range(len(sequences)))
    random.Random(seed).shuffle(order)
    num_held = max(1, round(len(sequences) * fraction)) if len(sequences) > 1 else 0
    held = set(order[:num_held])
    return ([s for i, s in enumerate(sequences) if i not in held], [s for i, s in enumerate(sequences) if i in held])


def frequency_ranked_vocab(sequences: list[TeacherSequence], vocab_size: int, size: int) -> torch.Tensor:
    """FR-Spec's reduced vocabulary: the `size` tokens most frequent in the sequences.

    Frequency is a soft count: occurrences in the text plus the target's kept probabilities at
    every position (a token the target often rates likely counts even where it was not chosen),
    then how often a token is kept at all; remaining ties (and unseen tokens) go by token id, i.e.
    BPE merge order, a proxy for frequency in the tokenizer's own corpus. Sorted ascending; int64.
    """
    if not 0 < size <= vocab_size:
        raise ValueError(f"vocabulary subset size must be in [1, {vocab_size}], got {size}")
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for seq in sequences:
        kept = seq.topk_ids.flatten().long()
        counts += torch.bincount(seq.token_ids, minlength=vocab_size).double()
        counts.index_add_(0, kept, seq.topk_probs.flatten().double())
        counts += 1e-3 * torch.bincount(kept, minlength=vocab_size).double()
    score = counts - 1e-4 * torch.arange(vocab_size, dtype=torch.float64) / vocab_size
    return score.topk(size).indices.sort().values
