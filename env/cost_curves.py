"""Machines unlike the profiled one: per-episode cost curves for the simulator, and the two CPUs they must cover.

A policy trained on one machine's latency profile learns that machine's prices: on the EPYC
Zen 3 that measured the shipped fp32 profile a forward's time grows steeply with the rows it
feeds, so verifying K drafts is dear; on an Intel Xeon with AMX bf16 the same forward is flat
from 1 to 32 rows, so verifying is nearly free. `CurveEnvelope.draw` picks, per episode, a
`CostCurve`: a scale, how steeply time grows with tokens per row and with batch, and each draft
level's cost relative to the target. `warp_profile` applies it to a `LatencyProfile`.

The shape is linear in the rows a forward feeds, as every measured CPU's is (a flat cost of
streaming the weights, plus compute per row): T(b, t, c) = T(1, 1, c0) g(b, t) h(b, t, c) with
g = 1 + token_slope b (t - 1) + batch_slope (b - 1), in units of the 1-row forward, and h the
profile's own growth with context at that (b, t). Intel AMX bf16 has slopes ~0.007, Intel and
Zen 3 fp32 ~0.035, this machine's self-test (b8_t16 ~ 11x b1_t1) ~0.08.

`python -m env.cost_curves [--profile PATH]` prints the reference CPUs' curves beside the
profile's and the envelope's flattest and steepest, ms at 1 / 9 / 16 / 32 rows (one forward of
the whole stack, batch 1, the row count as tokens, context 64).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.decision import TARGET
from engine.profile import LatencyProfile
from engine.profile.latency_profile import LevelProfile

REFERENCE_ROWS = (1, 9, 16, 32)
REFERENCE_CONTEXT = 64
# ms for SmolLM2-135M (30 layers + head, 2 threads) at REFERENCE_ROWS, measured on an Intel Xeon
# with AMX (SpecRoute issue 29); the EPYC Zen 3 fp32 curve is the shipped profile's own
REFERENCE_CURVES_MS = {
    "intel-xeon-amx-bf16-prepacked": (14.7, 14.6, 15.0, 18.0),
    "intel-xeon-fp32-prepacked": (25.6, 32.4, 38.4, 52.9),
}
ZEN_SELF_TEST = "this EPYC Zen 3's fp32 self-test ~11 (b8_t16 ~570 ms / b1_t1 ~50 ms)"


@dataclass(frozen=True)
class CostCurve:
    """One simulated machine relative to the profiled one.

    Args:
        scale: every forward's time x this.
        token_slope: the cost of one more token in every row, x the 1-row forward (0: flat).
        batch_slope: the cost of one more row of one token, x the 1-row forward.
        level_factors: (level, factor) of each level's cost relative to the target's.
    """

    scale: float = 1.0
    token_slope: float = 0.035
    batch_slope: float = 0.035
    level_factors: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class CurveEnvelope:
    """What `draw` spans, per episode: scale exp(U(log_scale)), each slope U(slope), each
    non-target level's relative cost exp(U(-level_spread, level_spread)). The defaults cover the
    Intel AMX bf16 (flat, ~0.4x the profile's 1-row time) and Zen 3 fp32 (steep) curves."""

    log_scale: tuple[float, float] = (-1.1, 0.7)
    slope: tuple[float, float] = (0.0, 0.16)
    level_spread: float = 0.7

    def __post_init__(self) -> None:
        if self.log_scale[0] > self.log_scale[1] or self.slope[0] > self.slope[1]:
            raise ValueError(f"ranges must be (low, high), got log_scale={self.log_scale}, slope={self.slope}")
        if self.slope[0] < 0 or self.level_spread < 0:
            raise ValueError("slopes and level_spread must be >= 0")

    def draw(self, rng: np.random.Generator, levels: Iterable[str]) -> CostCurve:
        others = sorted(name for name in levels if name != TARGET)
        factors = np.exp(rng.uniform(-self.level_spread, self.level_spread, len(others)))
        return CostCurve(scale=float(np.exp(rng.uniform(*self.log_scale))),
                         token_slope=float(rng.uniform(*self.slope)), batch_slope=float(rng.uniform(*self.slope)),
                         level_factors=tuple(zip(others, factors.tolist())))

    def extremes(self) -> dict[str, CostCurve]:
        """The flattest and the steepest curve the envelope draws (scale 1)."""
        return {"flattest": CostCurve(1.0, self.slope[0], self.slope[0]),
                "steepest": CostCurve(1.0, self.slope[1], self.slope[1])}


def _warp_grid(level: LevelProfile, curve: CostCurve, factor: float) -> list:
    seconds = np.asarray(level.seconds, dtype=np.float64)                       # [batches, tokens, contexts]
    if level.kind == "model_free":
        return (seconds * curve.scale * factor).tolist()
    b = np.asarray(level.batches, dtype=np.float64)[:, None, None]
    t = np.asarray(level.tokens, dtype=np.float64)[None, :, None]
    rows = 1.0 + curve.token_slope * b * (t - 1.0) + curve.batch_slope * (b - 1.0)   # [batches, tokens, 1]
    by_context = seconds / seconds[:, :, :1]                                     # [batches, tokens, contexts]
    warped = curve.scale * factor * seconds[0, 0, 0] * rows * by_context
    for axis in range(3):            # as the profile's own grid: never cheaper with more rows, tokens or context
        warped = np.maximum.accumulate(warped, axis=axis)
    return warped.tolist()


def warp_profile(profile: LatencyProfile, curve: CostCurve) -> LatencyProfile:
    """`profile` as the machine `curve` describes (grids stay non-decreasing along every axis)."""
    factors = dict(curve.level_factors)
    levels = {name: LevelProfile(level.kind, level.batches, level.tokens, level.contexts,
                                 _warp_grid(level, curve, factors.get(name, 1.0)))
              for name, level in profile.levels.items()}
    meta = {**profile.meta, "cost_curve": {"scale": curve.scale, "token_slope": curve.token_slope,
                                           "batch_slope": curve.batch_slope, "level_factors": dict(factors)}}
    return LatencyProfile(profile.model, levels, meta)


def rows_curve_ms(profile: LatencyProfile, rows: Sequence[int] = REFERENCE_ROWS) -> tuple[float, ...]:
    """The target's forward time in ms at each row count (batch 1, the rows as tokens, context 64)."""
    return tuple(1e3 * profile.forward_time(TARGET, 1, n, REFERENCE_CONTEXT) for n in rows)


def relative(curve_ms: Sequence[float]) -> tuple[float, ...]:
    """A curve as multiples of its 1-row time: its shape, whatever the machine's speed."""
    return tuple(v / curve_ms[0] for v in curve_ms)


@dataclass
class CurveReport:
    """The reference CPUs, the profile and the envelope's extremes, ms at `rows`."""

    rows: tuple[int, ...]
    curves_ms: dict[str, tuple[float, ...]] = field(default_factory=dict)
    scale_range: tuple[float, float] = (1.0, 1.0)
    batch8_tokens16: dict[str, float] = field(default_factory=dict)     # T(8, 16) / T(1, 1)

    def lines(self) -> list[str]:
        head = "curve".ljust(34) + "".join(f"{n:>8d}" for n in self.rows) + "   (ms at rows; x 1-row time)"
        out = [head]
        for name, ms in self.curves_ms.items():
            out.append(name.ljust(34) + "".join(f"{v:8.1f}" for v in ms) + "   "
                       + " ".join(f"{r:.2f}" for r in relative(ms)))
        low, high = self.scale_range
        out.append(f"envelope scale: the 1-row time x {low:.2f} .. {high:.2f} "
                   f"({low * self.curves_ms['profile'][0]:.1f} .. {high * self.curves_ms['profile'][0]:.1f} ms)")
        out.append("batch 8 x 16 tokens, x the 1-row time: " + ", ".join(
            f"{name} {v:.1f}" for name, v in self.batch8_tokens16.items()) + f", {ZEN_SELF_TEST}")
        return out


def batch_ratio(profile: LatencyProfile, batch: int = 8, tokens: int = 16) -> float:
    return profile.forward_time(TARGET, batch, tokens, REFERENCE_CONTEXT) / profile.forward_time(
        TARGET, 1, 1, REFERENCE_CONTEXT)


def curve_report(profile: LatencyProfile, envelope: CurveEnvelope | None = None,
                 rows: Sequence[int] = REFERENCE_ROWS) -> CurveReport:
    envelope = envelope or CurveEnvelope()
    curves = {"profile": rows_curve_ms(profile, rows), **REFERENCE_CURVES_MS}
    batch8 = {"profile": batch_ratio(profile)}
    for name, curve in envelope.extremes().items():
        warped = warp_profile(profile, curve)
        curves[f"envelope {name} (slopes {curve.token_slope:g})"] = rows_curve_ms(warped, rows)
        batch8[f"envelope {name}"] = batch_ratio(warped)
    scales = (float(np.exp(envelope.log_scale[0])), float(np.exp(envelope.log_scale[1])))
    return CurveReport(tuple(rows), curves, scales, batch8)


def main(argv: Sequence[str] | None = None) -> CurveReport:
    from env.config import SimBackendConfig, resolve_path
    parser = argparse.ArgumentParser(description="Print the reference CPUs' cost curves and the simulator's envelope.")
    parser.add_argument("--profile", default=SimBackendConfig().profile, help="latency profile JSON")
    args = parser.parse_args(argv)
    report = curve_report(LatencyProfile.load(resolve_path(args.profile)))
    print("\n".join(report.lines()))
    return report


if __name__ == "__main__":
    main()
