"""The self-test of one forward path on the loaded model: its speed and whether it is batch-invariant.

Speed: one target forward over 1, 9 and 16 tokens per row at batch 1 and at batch 8, at a
context of `context` tokens (the median of `repeats` after a warm-up), the shapes of a decode
step and of verifying 8 and 15 drafted tokens.

Invariance: greedy-decode `steps` tokens one at a time, then feed the same tokens again in
verification windows of 9, alone and beside two other rows that feed 1 and 5 tokens, and count
the positions whose logits differ in any bit (and whose argmax differs). A path is invariant
when none differ: then speculation cannot drift from plain decoding on this machine.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
from transformers import PreTrainedModel

from engine.linear_kernels import prepacked_available
from engine.precision import DTYPES
from engine.runner import ModelRunner

SPEED_SHAPES = ((1, 1), (1, 9), (1, 16), (8, 1), (8, 9), (8, 16))     # (rows, tokens per row)
VERIFY_WINDOW = 9


@dataclass
class PathMeasurement:
    """One candidate path's row of the self-test table."""

    path: str                                     # dtype-kernel, e.g. float32-prepacked
    available: bool = True
    reason: str = ""                              # why it was not measured
    ms: dict[str, float] = field(default_factory=dict)       # "b{rows}_t{tokens}" -> ms per forward
    positions: int = 0                            # decode-vs-verify positions compared
    logits_differ: int = 0                        # ... whose logits differ in any bit
    argmax_flips: int = 0                         # ... whose argmax differs

    @property
    def invariant(self) -> bool:
        return self.available and self.positions > 0 and self.logits_differ == 0

    @property
    def score_ms(self) -> float:
        """Geometric mean over the measured shapes: no shape's absolute size dominates."""
        return statistics.geometric_mean(self.ms.values()) if self.ms else float("inf")

    def to_json(self) -> dict:
        return {**asdict(self), "invariant": self.invariant, "score_ms": round(self.score_ms, 3)}

    @classmethod
    def from_json(cls, data: dict) -> PathMeasurement:
        fields = {k: data[k] for k in ("path", "available", "reason", "ms", "positions", "logits_differ", "argmax_flips")}
        return cls(**fields)


def path_unavailable_reason(model: PreTrainedModel, dtype: str, kernel: str) -> str:
    """Why this path cannot be measured here ('' when it can)."""
    if kernel == "prepacked" and not prepacked_available(DTYPES[dtype], torch.device("cpu")):
        return f"this CPU/torch build has no oneDNN {dtype} prepacked kernel"
    if any(p.numel() == 0 for p in model.parameters()):          # a copy of it could not run
        return "the model's weights were released to another path's kernels"
    return ""


def _runner_for(model: PreTrainedModel, dtype: str, kernel: str, max_len: int) -> ModelRunner:
    """A runner on a path over a copy of the model: the model, its parameters' layout and the
    products shared by every runner over it (engine/runner.py) stay as they were, so the engine
    built next on another path does not find this path's products cached on its modules."""
    return ModelRunner(copy.deepcopy(model).to(DTYPES[dtype]).eval(), max_len, kernel=kernel, invariant=True)


def _time_forward(runner: ModelRunner, slots: list[int], width: int, context: int, repeats: int,
                  give_up_ms: float = float("inf")) -> float:
    times = []
    for _ in range(repeats + 1):                  # the first call picks kernels: not timed
        began = time.perf_counter()
        runner.forward(slots, [[7] * width for _ in slots], [width] * len(slots))
        times.append(time.perf_counter() - began)
        for slot in slots:
            runner.cache.rollback(slot, context)
        if times[0] * 1e3 > 4 * give_up_ms:      # hopeless even allowing for the first call's set-up
            return times[0] * 1e3
    return statistics.median(times[1:]) * 1e3


def measure_speed(runner: ModelRunner, context: int, repeats: int, seed: int,
                  give_up_ms: float = float("inf")) -> dict[str, float]:
    """ms per forward by shape; stops after the first shape (a decode step) if it takes over `give_up_ms`."""
    generator = torch.Generator().manual_seed(seed)
    slots = [runner.cache.allocate_slot() for _ in range(max(r for r, _ in SPEED_SHAPES))]
    for slot in slots:
        prompt = torch.randint(runner.vocab_size, (context,), generator=generator).tolist()
        runner.forward([slot], [prompt], [1])
    ms = {}
    for rows, width in SPEED_SHAPES:
        limit = give_up_ms if not ms else float("inf")
        ms[f"b{rows}_t{width}"] = round(_time_forward(runner, slots[:rows], width, context, repeats, limit), 3)
        if ms[f"b{rows}_t{width}"] > limit:
            break
    return ms


def count_drift(runner: ModelRunner, prompt_len: int, steps: int, seed: int,
                prompt: list[int] | None = None) -> tuple[int, int, int]:
    """(positions, logits differing, argmax flips) between decode and verification forwards,
    from `prompt` (random tokens when None); the other rows' prompts are random."""
    generator = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(runner.vocab_size, (n,), generator=generator).tolist()
               for n in (prompt_len, prompt_len // 2 + 3, prompt_len + 11)]
    if prompt is not None:
        prompts[0] = list(prompt)
    slots = [runner.cache.allocate_slot() for _ in prompts]
    first = slots[0]
    for slot, row in zip(slots[1:], prompts[1:]):
        runner.forward([slot], [row], [1])
    logits = runner.forward([first], [prompts[0]], [1])[0, -1]
    fed, decoded = [], []                          # decode: token fed at each step and the logits after it
    for _ in range(steps):
        fed.append(int(logits.argmax()))
        logits = runner.forward([first], [[fed[-1]]], [1])[0, -1]
        decoded.append(logits)
    positions = differ = flips = 0
    for start in range(0, steps - VERIFY_WINDOW + 1, VERIFY_WINDOW - 1):
        window = fed[start:start + VERIFY_WINDOW]
        for batched in (False, True):
            runner.cache.rollback(first, prompt_len + start)
            if batched:                            # beside rows feeding other widths
                others = [runner.cache.lengths[s] for s in slots[1:]]
                out = runner.forward(slots, [window, [5], [1, 2, 3, 4, 5]], [len(window), 1, 5])[0]
                for slot, length in zip(slots[1:], others):
                    runner.cache.rollback(slot, length)
            else:
                out = runner.forward([first], [window], [len(window)])[0]
            for j in range(len(window)):
                positions += 1
                differ += not torch.equal(out[j], decoded[start + j])
                flips += int(out[j].argmax()) != int(decoded[start + j].argmax())
    for slot in slots:
        runner.cache.free_slot(slot)
    return positions, differ, flips


def measure_path(model: PreTrainedModel, dtype: str, kernel: str, context: int = 128, repeats: int = 3,
                 steps: int = 25, seed: int = 0, give_up_ms: float = float("inf")) -> PathMeasurement:
    """Speed and invariance of `dtype-kernel` on `model` (left as it was). A path whose decode step
    takes over `give_up_ms` (a multiple of the fastest candidate's so far) is not measured further."""
    path = f"{dtype}-{kernel}"
    reason = path_unavailable_reason(model, dtype, kernel)
    if reason:
        return PathMeasurement(path, available=False, reason=reason)
    max_len = min(model.config.max_position_embeddings, context + 2 * steps + 64)
    context = min(context, max_len - 2 * steps - 32)
    try:
        runner = _runner_for(model, dtype, kernel, max_len)
        with torch.inference_mode():
            ms = measure_speed(runner, context, repeats, seed, give_up_ms)
            if len(ms) < len(SPEED_SHAPES):
                return PathMeasurement(path, available=False, ms=ms, reason=(
                    f"decode step {next(iter(ms.values())):.0f} ms, over {give_up_ms:.0f} ms: not measured further"))
            positions, differ, flips = count_drift(runner, min(context, 40), steps, seed)
    except RuntimeError as exc:                   # a kernel this CPU cannot create: a column, not a crash
        return PathMeasurement(path, available=False, reason=f"{type(exc).__name__}: {str(exc)[:200]}")
    return PathMeasurement(path, ms=ms, positions=positions, logits_differ=differ, argmax_flips=flips)
