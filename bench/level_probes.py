"""What bench/bench_draft.py measures of each level outside the engine's step: 1-token step cost
and teacher-forced top-1 agreement with the target's greedy output.

An EAGLE level's runner takes the target's features besides tokens: its step is timed on zero
features (the same compute), and its agreement is taken on the target's own features of the
prompt and output (the law of each output token given the true features before it: what its
first drafted token sees).
"""

from __future__ import annotations

import statistics
import time

import torch

from engine import Engine
from engine.runner import ModelRunner


def _forward(runner: ModelRunner, slot: int, tokens: list[int], num_logits: int = 1, features=None) -> torch.Tensor:
    if features is None:
        features = runner.timing_features(1, len(tokens))
    return runner.forward([slot], [tokens], [num_logits], features=features)


def step_time_ratio(engine: Engine, ids: list[int], levels: list[str], repeats: int = 9) -> dict:
    """Median single-token forward time of each level and the target at this context, measured
    alternately: {level: {"ms", "ratio"}, "target_ms"}."""
    times: dict[str, list[float]] = {name: [] for name in [*levels, "target"]}
    slots = {}
    for name in times:
        runner = engine.levels[name].runner
        slots[name] = runner.cache.allocate_slot()
        _forward(runner, slots[name], ids)
    try:
        for _ in range(repeats):
            for name, samples in times.items():
                runner = engine.levels[name].runner
                start = time.perf_counter()
                _forward(runner, slots[name], [ids[-1]])
                samples.append(time.perf_counter() - start)
                runner.cache.rollback(slots[name], len(ids))
    finally:
        for name, slot in slots.items():
            engine.levels[name].runner.cache.free_slot(slot)
    target_s = statistics.median(times.pop("target"))
    return {"target_ms": 1000 * target_s,
            **{name: {"ms": 1000 * statistics.median(t), "ratio": statistics.median(t) / target_s}
               for name, t in times.items()}}


def top1_agreement(runner: ModelRunner, ids: list[int], output: list[int],
                   target: ModelRunner | None = None) -> tuple[int, int]:
    """Teacher-forced greedy agreement of a level's runner on the generated positions:
    (matches, positions). An EAGLE runner needs the `target` runner for the features."""
    if not output or (runner.feature_fc is not None and len(ids) < 2):
        return 0, 0
    sequence, features = ids + output, None
    tokens = sequence[:-1]                                 # the token before each predicted one, and before
    if runner.feature_fc is not None:                      # pairs (f_p, x_{p+1}) up to the one before the last
        slot = target.cache.allocate_slot()
        try:
            features = target.forward([slot], [sequence[:-2]], [1], return_hidden=True)[1]      # [1, n - 2, h]
        finally:
            target.cache.free_slot(slot)
        tokens = sequence[1:-1]
    slot = runner.cache.allocate_slot()
    try:
        logits = _forward(runner, slot, tokens, len(output), features)[0]                     # [n, vocab]
    finally:
        runner.cache.free_slot(slot)
    return int((logits.argmax(-1) == torch.tensor(output, device=logits.device)).sum()), len(output)
