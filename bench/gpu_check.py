"""GPU check: the lossless test subset and a short bench_engine run on CUDA, as one script.

On a machine without a CUDA device it prints one line and exits 0 (CI is CPU-only). With one,
the engine's default device is cuda (EngineConfig.device "auto"), so the tests' engines and
bench_engine's "ours" columns run there; transformers and llama.cpp columns stay on the CPU.

    .venv/bin/python -m bench.gpu_check [--max-minutes 8]
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field

import torch

from cli.dataclass_args import parse_dataclass
from data.paths import REPO_ROOT

LOSSLESS_TESTS = ["tests/engine/test_greedy_identity.py", "tests/engine/test_precision.py",
                  "tests/engine/test_sampling_lossless.py"]


@dataclass
class GpuCheckArgs:
    """Lossless tests and a short engine benchmark on CUDA."""

    max_minutes: float = field(default=8.0, metadata={"help": "time cap for the benchmark part", "aliases": ["--minutes"]})


def main(cfg: GpuCheckArgs) -> int:
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch; nothing to check on this machine")
        return 0
    print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    started = time.perf_counter()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-o", "addopts=", *LOSSLESS_TESTS], cwd=REPO_ROOT)
    print(f"gpu_check: lossless tests rc={tests.returncode} ({time.perf_counter() - started:.0f} s)", flush=True)
    bench = subprocess.run([sys.executable, "-m", "bench.bench_engine", "--prompts-per-category", "1",
                            "--mt-bench", "0", "--sharegpt", "0", "--max-tokens", "64",
                            "--paths", "float32-dense,bfloat16-dense", "--max-minutes", str(cfg.max_minutes),
                            "--output-name", "engine_gpu"], cwd=REPO_ROOT)
    print(f"gpu_check: bench_engine rc={bench.returncode}; results in bench/results/engine_gpu.md", flush=True)
    return tests.returncode or bench.returncode


if __name__ == "__main__":
    sys.exit(main(parse_dataclass(GpuCheckArgs)))
