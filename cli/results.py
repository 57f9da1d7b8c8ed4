"""Result files every command writes: `<name>.json` (full data) and `<name>.md` (the table the README
shows), with the machine that produced them. Benchmarks, evaluation and OPE validation share it.

Imports nothing of the project, so every package may import it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

from data.paths import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "bench" / "results"


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
