"""`auto` decided on the machine that runs: a cached self-test of every candidate forward path.

No machine's figures are another's default. On first use with a model, an engine measures each
candidate (fp32 and bf16, oneDNN-prepacked and dense; int8/int4 stay explicit opt-ins because
they change the model) on the loaded target (`engine.autotune.measure`), picks the fastest path
that is batch-invariant there (decode and verification give every position the same bits, so a
speculative run's greedy output cannot drift from plain decoding) and caches the choice under
what decides it: CPU model and flags, torch version and threads, and the model's digest.
Where no path is invariant (a CPU whose products change with the row count), it falls back to
the fastest fp32 path without argmax flips (exact by fp32 margin only) and says so.

`python -m engine.autotune` prints the table and rewrites the cache. `SPECROUTE_AUTO_PATH=dtype-kernel`
pins what `auto` means without a self-test (the test suite pins it, so its paths do not depend
on how busy the machine is).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel

from engine.autotune.measure import PathMeasurement, measure_path
from engine.models import cache_dir
from engine.precision import Precision, resolve_precision

logger = logging.getLogger("specroute.autotune")
CANDIDATES = (("float32", "prepacked"), ("float32", "dense"), ("bfloat16", "prepacked"), ("bfloat16", "dense"))
SELF_TEST_VERSION = 1                 # bump when the measurement changes: old caches are ignored
GIVE_UP_FACTOR = 2.0                  # a candidate whose decode step is this much slower than the best is dropped


@dataclass
class PathChoice:
    """The self-test's verdict: the chosen path, why, and every candidate's row."""

    dtype: str
    kernel: str
    reason: str
    invariant: bool
    measurements: list[PathMeasurement]
    key: dict
    cached: bool = False

    @property
    def path(self) -> str:
        return f"{self.dtype}-{self.kernel}"

    def to_json(self) -> dict:
        return {"dtype": self.dtype, "kernel": self.kernel, "reason": self.reason, "invariant": self.invariant,
                "key": self.key, "measurements": [m.to_json() for m in self.measurements]}

    @classmethod
    def from_json(cls, data: dict) -> PathChoice:
        return cls(data["dtype"], data["kernel"], data["reason"], data["invariant"],
                   [PathMeasurement.from_json(m) for m in data["measurements"]], data["key"], cached=True)

    def table(self) -> str:
        """The self-test as a text table (logged at start-up, printed by the CLI)."""
        shapes = list(next((m.ms for m in self.measurements if m.ms), {}))
        lines = [f"{'path':20s} " + " ".join(f"{s:>8s}" for s in shapes) + "  invariant  differ/positions  flips"]
        for m in self.measurements:
            if not m.available:
                lines.append(f"{m.path:20s} not measured: {m.reason}")
                continue
            times = " ".join(f"{m.ms[s]:8.2f}" for s in shapes)
            lines.append(f"{m.path:20s} {times}  {'yes' if m.invariant else 'no':9s}  "
                         f"{m.logits_differ:>6d}/{m.positions:<9d}  {m.argmax_flips}")
        mark = "(cached)" if self.cached else "(measured now)"
        lines.append(f"chosen: {self.path} {mark}: {self.reason}")
        return "\n".join(lines)


def cpu_identity() -> dict:
    """CPU model and instruction-set flags (what decides which kernels exist and how they round)."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.processor(), platform.machine()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": model, "cpu_flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:16]}


def model_digest(model: PreTrainedModel) -> str:
    """A cheap identity of a model: its config and a sample of every tensor's values."""
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        flat = tensor.detach().reshape(-1)
        if flat.numel():
            digest.update(flat[:: max(1, flat.numel() // 64)][:64].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:32]


def machine_key(digest: str) -> dict:
    """What decides a time measured here, short of the path: CPU model and flags, torch version and
    threads, and the model (its `model_digest`). The self-test and the latency curve
    (engine/profile/machine_curve.py) both key their caches on it."""
    return {**cpu_identity(), "torch": torch.__version__, "threads": torch.get_num_threads(), "model": digest}


def selftest_key(model: PreTrainedModel, candidates) -> dict:
    return {**machine_key(model_digest(model)), "candidates": ["-".join(c) for c in candidates],
            "version": SELF_TEST_VERSION}


def cache_file(key: dict) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "autotune" / f"{name}.json"


def decide(measurements: list[PathMeasurement]) -> tuple[PathMeasurement, str]:
    """The fastest invariant path; else the fastest fp32 path without flips; else fp32 dense."""
    measured = [m for m in measurements if m.available and m.ms]
    invariant = [m for m in measured if m.invariant]
    if invariant:
        best = min(invariant, key=lambda m: m.score_ms)
        return best, "fastest batch-invariant path (decode and verification agree in every bit)"
    margin = [m for m in measured if m.path.startswith("float32") and m.argmax_flips == 0]
    if margin:
        best = min(margin, key=lambda m: m.score_ms)
        return best, ("no candidate is batch-invariant on this CPU: fastest fp32 path without argmax flips "
                      "(greedy identity holds by fp32 margin, not by invariance)")
    fallback = next((m for m in measurements if m.path == "float32-dense"), PathMeasurement("float32-dense"))
    return fallback, "no candidate kept greedy identity in the self-test: float32-dense, the reference path"


def run_selftest(model: PreTrainedModel, candidates=CANDIDATES, give_up_factor: float = GIVE_UP_FACTOR,
                 **measure_kwargs) -> PathChoice:
    """Measure every candidate now (no cache); one whose decode step is over `give_up_factor` times
    the fastest so far is dropped after that first shape (a bf16 path without bf16 hardware)."""
    key = selftest_key(model, candidates)
    measurements: list[PathMeasurement] = []
    for dtype, kernel in candidates:
        logger.info("forward-path self-test: %s-%s ...", dtype, kernel)
        decode = [m.ms["b1_t1"] for m in measurements if "b1_t1" in m.ms and m.available]
        give_up = give_up_factor * min(decode) if decode else float("inf")
        measurements.append(measure_path(model, dtype, kernel, give_up_ms=give_up, **measure_kwargs))
    best, reason = decide(measurements)
    dtype, kernel = best.path.split("-")
    return PathChoice(dtype, kernel, reason, best.invariant, measurements, key)


def choose_path(model: PreTrainedModel, dtype: str = "auto", kernel: str = "auto", refresh: bool = False,
                **measure_kwargs) -> PathChoice:
    """The cached self-test's choice among the candidates that `dtype`/`kernel` admit."""
    candidates = tuple(c for c in CANDIDATES if dtype in ("auto", c[0]) and kernel in ("auto", c[1]))
    key = selftest_key(model, candidates)
    path = cache_file(key)
    if not refresh and path.exists():
        try:
            choice = PathChoice.from_json(json.loads(path.read_text()))
            if choice.key == key:
                logger.info("forward path %s (cached self-test %s)", choice.path, path)
                return choice
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring an unreadable self-test cache %s", path)
    choice = run_selftest(model, candidates, **measure_kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(choice.to_json(), indent=1))
    partial.replace(path)
    logger.info("forward-path self-test (cached in %s):\n%s", path, choice.table())
    return choice


def resolve_engine_precision(model: PreTrainedModel, dtype: str = "auto", kernel: str = "auto",
                             weights: str = "dense", device: str = "auto") -> tuple[Precision, PathChoice | None]:
    """The engine's path: explicit choices as given; `auto` on a CPU with dense weights from the
    self-test (quantized weights and CUDA resolve as `engine.precision` documents)."""
    explicit = resolve_precision(dtype, kernel, weights, device)          # validates every choice
    if explicit.device.type != "cpu" or weights != "dense" or "auto" not in (dtype, kernel):
        return explicit, None
    pinned = os.environ.get("SPECROUTE_AUTO_PATH", "")
    if pinned:
        pinned_dtype, _, pinned_kernel = pinned.partition("-")
        dtype = pinned_dtype if dtype == "auto" else dtype
        try:
            return resolve_precision(dtype, pinned_kernel if kernel == "auto" else kernel, weights, device), None
        except ValueError:               # the pinned kernel has no version in the dtype asked for
            return resolve_precision(dtype, kernel, weights, device), None
    choice = choose_path(model, dtype, kernel)
    return resolve_precision(choice.dtype, choice.kernel, weights, device), choice
