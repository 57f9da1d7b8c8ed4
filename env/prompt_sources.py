"""Prompt banks read in place from ../shared/data: Spec-Bench, MT-bench, HumanEval, ShareGPT, Azure code.

Each bank is a list of `Prompt`s with a category (the key of the simulator's acceptance models)
and, where the data has one, a reference answer length that sets the request's output length.
The Azure code trace has sizes but no text: its prompts are HumanEval prompts concatenated up to
the trace's context size, so a real engine has code to read and the simulator a length.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from data.jsonl import read_jsonl
from data.paths import data_dir
from data.spec_bench import SPEC_BENCH_TASKS, load_spec_bench, spec_bench_path

PROMPT_SOURCES = ("spec_bench", "mt_bench", "humaneval", "sharegpt", "azure_code")
CATEGORIES = SPEC_BENCH_TASKS + ("humaneval", "sharegpt", "azure_code")
CHARS_PER_TOKEN = 4.0      # the usual English estimate; only turns reference answers into lengths


@dataclass(frozen=True)
class Prompt:
    """One prompt. `is_chat` prompts go through the chat template; the others are raw completions."""

    source: str
    item_id: str
    category: str
    text: str
    is_chat: bool = True
    reference_tokens: int | None = None     # estimated from the reference answer, if any


@dataclass(frozen=True)
class TraceRow:
    """One request of the Azure code trace: seconds since the trace start and its sizes."""

    time_s: float
    context_tokens: int
    generated_tokens: int


def _reference_tokens(text: str | None) -> int | None:
    return max(1, round(len(text) / CHARS_PER_TOKEN)) if text else None


@functools.lru_cache(maxsize=8)
def _spec_bench(directory: Path) -> tuple[Prompt, ...]:
    return tuple(Prompt("spec_bench", str(q.question_id), q.task, q.text, reference_tokens=_reference_tokens(q.reference))
                 for q in load_spec_bench(spec_bench_path(directory)))


@functools.lru_cache(maxsize=8)
def _mt_bench(directory: Path) -> tuple[Prompt, ...]:
    return tuple(Prompt("mt_bench", str(row["question_id"]), "mt_bench", row["turns"][0],
                        reference_tokens=_reference_tokens((row.get("reference") or [None])[0]))
                 for row in read_jsonl(directory / "mt_bench" / "question.jsonl"))


@functools.lru_cache(maxsize=8)
def _humaneval(directory: Path) -> tuple[Prompt, ...]:
    return tuple(Prompt("humaneval", row["task_id"], "humaneval", row["prompt"], is_chat=False,
                        reference_tokens=_reference_tokens(row["canonical_solution"]))
                 for row in read_jsonl(directory / "humaneval" / "HumanEval.jsonl.gz"))


@functools.lru_cache(maxsize=8)
def _sharegpt(directory: Path) -> tuple[Prompt, ...]:
    return tuple(Prompt("sharegpt", row["id"], "sharegpt", row["conversations"][0]["value"])
                 for row in read_jsonl(directory / "sharegpt" / "ShareGPT_V3_filtered_500.jsonl"))


@functools.lru_cache(maxsize=8)
def azure_code_trace(directory: Path | None = None) -> tuple[TraceRow, ...]:
    """The Azure LLM inference trace 2023 (code), times relative to its first request."""
    path = (directory or data_dir()) / "traces" / "AzureLLMInferenceTrace_code.csv"
    rows = []
    with open(path, newline="") as handle:
        for record in csv.DictReader(handle):
            stamp = datetime.strptime(record["TIMESTAMP"][:26], "%Y-%m-%d %H:%M:%S.%f")
            rows.append((stamp, int(record["ContextTokens"]), int(record["GeneratedTokens"])))
    start = rows[0][0]
    return tuple(TraceRow((stamp - start).total_seconds(), ctx, gen) for stamp, ctx, gen in rows)


def azure_code_prompt(index: int, context_tokens: int, generated_tokens: int) -> Prompt:
    """A code prompt of about `context_tokens` tokens made of consecutive HumanEval prompts."""
    bank = _humaneval(data_dir())
    want_chars = int(context_tokens * CHARS_PER_TOKEN)
    parts, size, i = [], 0, index
    while size < want_chars:
        text = bank[i % len(bank)].text
        parts.append(text)
        size += len(text)
        i += 1
    return Prompt("azure_code", str(index), "azure_code", "".join(parts)[:want_chars], is_chat=False,
                  reference_tokens=generated_tokens)


def load_prompts(source: str) -> tuple[Prompt, ...]:
    """The prompts of `source` ("spec_bench", "spec_bench:<task>", "mt_bench", "humaneval", "sharegpt")."""
    name, _, task = source.partition(":")
    loaders = {"spec_bench": _spec_bench, "mt_bench": _mt_bench, "humaneval": _humaneval, "sharegpt": _sharegpt}
    if name not in loaders:
        raise ValueError(f"unknown prompt source {source!r}; known: {', '.join(PROMPT_SOURCES)} "
                         f"and spec_bench:<task> with task in {', '.join(SPEC_BENCH_TASKS)}")
    prompts = loaders[name](data_dir())
    if task:
        if name != "spec_bench" or task not in SPEC_BENCH_TASKS:
            raise ValueError(f"unknown prompt source {source!r}; tasks exist only for spec_bench: "
                             f"{', '.join(SPEC_BENCH_TASKS)}")
        prompts = tuple(p for p in prompts if p.category == task)
    return prompts
