"""Plumbing every benchmark script shares: Spec-Bench prompts, peak RSS, machine info, result files.

Kept generic on purpose: nothing here knows about a particular engine or configuration.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import random
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"

MT_BENCH_CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
SPEC_BENCH_CATEGORIES = MT_BENCH_CATEGORIES + ("translation", "summarization", "qa", "math_reasoning", "rag")


# ---- data -----------------------------------------------------------------------------------
def data_dir() -> Path:
    """`../shared/data` next to the repository, or $SPECROUTE_DATA."""
    override = os.environ.get("SPECROUTE_DATA")
    return Path(override) if override else (REPO_ROOT / ".." / "shared" / "data").resolve()


@dataclass(frozen=True)
class BenchPrompt:
    question_id: int
    category: str
    text: str               # the first user turn


def load_spec_bench(path: Path | None = None) -> list[BenchPrompt]:
    path = path or data_dir() / "spec_bench" / "question.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"Spec-Bench questions not found at {path} (set SPECROUTE_DATA)")
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [BenchPrompt(int(r["question_id"]), r["category"], r["turns"][0]) for r in rows]


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
    rows = load_spec_bench(path)
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


# ---- results --------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name as `lscpu` prints it (every results file names the CPU that produced it)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        name = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
        family = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("CPU family")), "")
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model:")), "")
    except (OSError, subprocess.SubprocessError):
        name = family = model = ""
    name = name or platform.processor() or platform.machine()
    return f"{name} (family {family}, model {model})" if family else name


def machine_info() -> dict:
    """What a reader needs to judge timings: the CPU, cores, load, library versions."""
    info = {"cpu": cpu_model(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count()}
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    for module in ("torch", "transformers"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            pass
    try:
        import torch
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, data: dict, markdown: str, directory: Path | None = None) -> tuple[Path, Path]:
    """Write `<name>.json` (full data) and `<name>.md` (the table README shows)."""
    directory = directory or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown.rstrip() + "\n", encoding="utf-8")
    return json_path, md_path


def publish_results(name: str, data: dict, markdown: str, results_dir: str = "") -> tuple[Path, Path]:
    """Write the result files (`results_dir` or bench/results) and print the table and their paths."""
    json_path, md_path = write_results(name, data, markdown, Path(results_dir) if results_dir else None)
    print(md_path.read_text(), flush=True)
    print(f"wrote {json_path} and {md_path}", flush=True)
    return json_path, md_path
