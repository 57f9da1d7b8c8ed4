"""Step time of the real engine in terms of a latency profile, fitted on the engine's own steps.

`env.calibrate` records every real step as the forwards `env.sim_clock.rows_forwards` says
it ran and the time it took; these fits turn that into what the simulator adds to the profile
(a scale, a prefill scale, per-step and per-row overhead) or into a profile of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class StepSample:
    """One real engine step: the forwards it ran (level, batch, tokens, context), rows, seconds."""

    forwards: list[tuple[str, int, int, int]]
    num_rows: int
    latency_s: float


@dataclass
class StepTimeFit:
    """What `SimCalibration` takes from a fit (same field names)."""

    profile_scale: float
    step_overhead_s: float
    row_overhead_s: float
    prefill_scale: float = 1.0
    prefill_tokens: int = 0


def _forward_features(batch: int, tokens: int, context: int) -> list[float]:
    """A forward's cost is multilinear in rows, tokens per row and context (weights read once,
    compute per token, attention per token and cached position)."""
    return [1.0, batch, batch * tokens, batch * context / 1024, batch * tokens * context / 1024]


def _nnls_relative(design: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Non-negative least squares of the relative error (a prefill step weighs as much as a decode step)."""
    from scipy.optimize import nnls
    coef, _ = nnls(design / measured[:, None], np.ones_like(measured))
    return coef


def relative_error(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted / measured - 1)))


def fit_scaled(profile, steps: list[StepSample]) -> tuple[StepTimeFit, float]:
    """Keep the measured profile: measured ~ scale x profile (forwards within its timed token
    range) + prefill scale x profile (forwards past it, which it extrapolates) + per-step +
    per-row x rows."""
    split = max(grid.tokens[-1] for grid in profile.levels.values() if grid.kind == "model")
    design = np.zeros((len(steps), 4))
    for i, step in enumerate(steps):
        for call in step.forwards:
            design[i, 1 if call[2] > split else 0] += profile.forward_time(*call)
        design[i, 2:] = 1.0, step.num_rows
    measured = np.array([s.latency_s for s in steps])
    coef = _nnls_relative(design, measured)
    if not design[:, 1].any():
        coef[1] = coef[0]                      # no prefill seen: no reason to treat it apart
    times = StepTimeFit(float(coef[0]), float(coef[2]), float(coef[3]), float(coef[1]), split)
    return times, relative_error(design @ coef, measured)


def fit_profile(base, steps: list[StepSample]):
    """A profile fitted on the engine's own steps: for every model level, forward time =
    c . (1, b, b t, b c, b t c) (non-negative), plus a per-row overhead; model-free levels keep
    their measured times. Under CPU contention this matches what the engine really takes,
    where timing single forwards does not. Returns (profile, per-row seconds, fit error)."""
    from engine.profile import LatencyProfile, LevelProfile
    model_levels = sorted({f[0] for s in steps for f in s.forwards if base.levels[f[0]].kind == "model"})
    columns = 5 * len(model_levels) + 1
    design = np.zeros((len(steps), columns))
    known = np.zeros(len(steps))
    for i, step in enumerate(steps):
        for level, batch, tokens, context in step.forwards:
            if level in model_levels:
                j = 5 * model_levels.index(level)
                design[i, j:j + 5] += _forward_features(batch, tokens, context)
            else:
                known[i] += base.forward_time(level, batch, tokens, context)
        design[i, -1] = step.num_rows
    measured = np.array([s.latency_s for s in steps])
    coef = _nnls_relative(design, np.maximum(measured - known, 0.1 * measured))
    batches, tokens, contexts = (1, 2, 4, 8, 16), (1, 2, 3, 5, 9, 17, 64, 256), (0, 512, 2048)
    placeholder = (1,), (1,), (0,)
    levels = {name: grid for name, grid in base.levels.items()
              if (grid.batches, grid.tokens, grid.contexts) != placeholder}       # levels no step ran stay out
    for n, level in enumerate(model_levels):
        c = coef[5 * n: 5 * n + 5]
        grid = [[[max(float(np.dot(c, _forward_features(b, t, x))), 1e-6) for x in contexts] for t in tokens]
                for b in batches]
        levels[level] = LevelProfile("model", batches, tokens, contexts, grid)
    meta = {**base.meta, "source": f"env.calibrate: fitted on {len(steps)} engine steps", "fitted_levels": model_levels}
    profile = LatencyProfile(base.model, levels, meta)
    fit = design @ coef + known
    return profile, float(coef[-1]), relative_error(fit, measured)
