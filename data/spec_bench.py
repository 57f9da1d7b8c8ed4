"""Spec-Bench (Xia et al., 2024, arXiv 2401.07851): its 480 questions, read in one place.

Each question has one of 13 categories: the 8 MT-bench categories (question ids 81-160, the
MT-bench questions themselves) and 5 Spec-Bench tasks. A question's `task` is one of the 6
tasks the paper reports: "mt_bench" for the 8 MT-bench categories, else its category.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from data.jsonl import read_jsonl
from data.paths import DATA_HINT, DataMissingError, data_dir

MT_BENCH_CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
SPEC_BENCH_CATEGORIES = MT_BENCH_CATEGORIES + ("translation", "summarization", "qa", "math_reasoning", "rag")
SPEC_BENCH_TASKS = ("mt_bench", "translation", "summarization", "qa", "math_reasoning", "rag")


@dataclass(frozen=True)
class SpecBenchQuestion:
    """One Spec-Bench row: its id, category (one of 13), user turns and reference answer, if any."""

    question_id: int
    category: str
    turns: tuple[str, ...]
    reference: str | None = None

    @property
    def text(self) -> str:
        """The first user turn (what a single-turn benchmark sends)."""
        return self.turns[0]

    @property
    def task(self) -> str:
        """The paper's task: "mt_bench" for the MT-bench categories, else the category."""
        return "mt_bench" if self.category in MT_BENCH_CATEGORIES else self.category


def spec_bench_path(directory: Path | None = None) -> Path:
    """Where the questions are: `<data dir>/spec_bench/question.jsonl`."""
    return (directory or data_dir()) / "spec_bench" / "question.jsonl"


def load_spec_bench(path: Path | None = None) -> tuple[SpecBenchQuestion, ...]:
    """Every question of the file at `path` (default `spec_bench_path()`), in file order.

    Raises DataMissingError (a FileNotFoundError naming SPECROUTE_DATA) when the file does not exist.
    """
    return _read_questions(path or spec_bench_path())


@functools.lru_cache(maxsize=8)
def _read_questions(path: Path) -> tuple[SpecBenchQuestion, ...]:
    if not path.exists():
        raise DataMissingError(f"Spec-Bench questions not found at {path}; {DATA_HINT}")
    rows = read_jsonl(path)
    return tuple(SpecBenchQuestion(int(row["question_id"]), row["category"], tuple(row["turns"]),
                                   (row.get("reference") or [None])[0]) for row in rows)
