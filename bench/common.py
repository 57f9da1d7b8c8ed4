"""Plumbing every benchmark script shares: Spec-Bench prompts and peak RSS (result files: `cli.results`).

Kept generic on purpose: nothing here knows about a particular engine or configuration.
"""

from __future__ import annotations

import random
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

from data.paths import REPO_ROOT
from data.spec_bench import SPEC_BENCH_CATEGORIES, load_spec_bench

RESULTS_DIR = REPO_ROOT / "bench" / "results"


# ---- data -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchPrompt:
    question_id: int
    category: str
    text: str               # the first user turn


def sample_prompts(per_category: int, categories: list[str] | None = None, seed: int = 0,
                   path: Path | None = None) -> list[BenchPrompt]:
    """`per_category` prompts from each category, sampled under `seed`, ordered round-robin
    (one of each category, then the second of each...) so a truncated run still covers all."""
    categories = list(categories or SPEC_BENCH_CATEGORIES)
    unknown = sorted(set(categories) - set(SPEC_BENCH_CATEGORIES))
    if unknown:
        raise ValueError(f"unknown categories {unknown}; known: {', '.join(SPEC_BENCH_CATEGORIES)}")
    if per_category <= 0:
        raise ValueError(f"per_category must be > 0, got {per_category}")
    rows = [BenchPrompt(q.question_id, q.category, q.text) for q in load_spec_bench(path)]
    rng = random.Random(seed)
    picked = {}
    for category in categories:
        pool = [r for r in rows if r.category == category]
        if len(pool) < per_category:
            raise ValueError(f"category {category} has {len(pool)} prompts, asked for {per_category}")
        picked[category] = rng.sample(pool, per_category)
    return [picked[c][i] for i in range(per_category) for c in categories]


# ---- arguments ------------------------------------------------------------------------------
def parse_categories(text: str) -> list[str]:
    """Comma-separated Spec-Bench categories in the order given; empty means all 13."""
    return [c.strip() for c in text.split(",") if c.strip()] or list(SPEC_BENCH_CATEGORIES)


def check_spec_bench_args(prompts_per_category: int, max_tokens: int, categories: str, output_name: str) -> None:
    """The checks every Spec-Bench benchmark's arguments share: a ValueError naming the flag."""
    if prompts_per_category <= 0 or max_tokens <= 0:
        raise ValueError("--prompts-per-category and --max-tokens must be > 0")
    unknown = sorted(set(parse_categories(categories)) - set(SPEC_BENCH_CATEGORIES))
    if unknown:
        raise ValueError(f"unknown categories {unknown}; known: {', '.join(SPEC_BENCH_CATEGORIES)}")
    check_output_name(output_name)


def check_output_name(name: str) -> None:
    """Result files are <results dir>/<name>.json and .md: the name must be a plain file stem."""
    if not name or "/" in name:
        raise ValueError("--output-name must be a plain file stem")


# ---- memory ---------------------------------------------------------------------------------
class PeakRSS:
    """Peak resident memory of this process over a window.

    On Linux `reset()` clears the kernel's high-water mark (/proc/self/clear_refs, "5"), so
    `read_mb()` is the peak since the reset; elsewhere it is the peak since the process began.
    """

    def __init__(self) -> None:
        self.is_windowed = False

    def reset(self) -> None:
        self.reset_is_windowed()

    def reset_is_windowed(self) -> bool:
        """Reset the window; True where the kernel supports it (else peaks are process-wide)."""
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            self.is_windowed = True
        except OSError:
            self.is_windowed = False
        return self.is_windowed

    def read_mb(self) -> float:
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return process_peak_rss_mb()


def process_peak_rss_mb() -> float:
    """Peak RSS since the process started (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
