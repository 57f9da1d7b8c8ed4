"""Measured forward latency per level on a (batch, tokens per row, context) grid, as JSON.

The cost model, the environment's simulator and the server read step times from here instead
of timing the hardware themselves, so a profile measured once (or shipped in `profiles/`)
stands for the machine.

JSON layout (version 1):

    {"version": 1, "model": "SmolLM2-135M-Instruct", "meta": {...},
     "levels": {"target": {"kind": "model", "batches": [1, 4], "tokens": [1, 9],
                           "contexts": [64, 1536], "seconds": [[[t, t], [t, t]], [[t, t], [t, t]]]},
                "ngram":  {"kind": "model_free", "batches": [1], ...}}}

`seconds[b][t][c]` is the time of one forward of `batches[b]` rows feeding `tokens[t]` tokens
each over `contexts[c]` cached tokens. A `model_free` level (n-gram, suffix) has the single
batch 1: its grid is the propose() time of one row for K = `tokens[t]`, and a batch costs
`batch` times that (drafters loop over rows).
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

PROFILE_VERSION = 1
LEVEL_KINDS = ("model", "model_free")
_MAX_CACHED_LOOKUPS = 65536


def profile_file(model_name: str, precision_name: str) -> str:
    """Where the shipped profile of a model on one forward path lives, relative to the repo:
    latency depends on the dtype and kernel, so each path has its own file."""
    return f"profiles/{model_name}.{precision_name}.json"


class ProfileError(ValueError):
    """A profile file is missing, unreadable or malformed, or lacks a level."""


def _check_axis(name: str, values) -> tuple[int, ...]:
    axis = tuple(values)
    if not axis:
        raise ProfileError(f"axis {name!r} is empty")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in axis):
        raise ProfileError(f"axis {name!r} must hold integers >= 0, got {list(axis)}")
    if any(b <= a for a, b in zip(axis, axis[1:])):
        raise ProfileError(f"axis {name!r} must be strictly increasing, got {list(axis)}")
    return axis


def _segment(axis: tuple[int, ...], x: float) -> tuple[int, float]:
    """(i, w) such that the value at x is (1 - w) * v[i] + w * v[i + 1].

    Inside the grid this interpolates; above it w > 1 extrapolates along the last segment;
    below it w = 0 holds the first point (latency is never extrapolated downwards).
    """
    if len(axis) == 1 or x <= axis[0]:
        return 0, 0.0
    i = min(bisect.bisect_right(axis, x) - 1, len(axis) - 2)
    return i, (x - axis[i]) / (axis[i + 1] - axis[i])


@dataclass
class LevelProfile:
    """The latency grid of one level; `seconds[b][t][c]` as in the module docstring."""

    kind: str
    batches: tuple[int, ...]
    tokens: tuple[int, ...]
    contexts: tuple[int, ...]
    seconds: list[list[list[float]]]

    def __post_init__(self) -> None:
        if self.kind not in LEVEL_KINDS:
            raise ProfileError(f"level kind must be one of {LEVEL_KINDS}, got {self.kind!r}")
        self.batches = _check_axis("batches", self.batches)
        self.tokens = _check_axis("tokens", self.tokens)
        self.contexts = _check_axis("contexts", self.contexts)
        if self.batches[0] < 1 or self.tokens[0] < 1:
            raise ProfileError("batches and tokens must start at 1 or more")
        if self.kind == "model_free" and self.batches != (1,):
            raise ProfileError("a model_free level is timed per row: its batches must be [1]")
        shape = (len(self.batches), len(self.tokens), len(self.contexts))
        try:
            grid = [[[float(v) for v in row] for row in plane] for plane in self.seconds]
        except (TypeError, ValueError) as error:
            raise ProfileError(f"seconds must be a nested list of numbers: {error}") from None
        if len(grid) != shape[0] or any(len(p) != shape[1] for p in grid) or \
                any(len(r) != shape[2] for p in grid for r in p):
            raise ProfileError(f"seconds must have shape [batches, tokens, contexts] = {list(shape)}")
        if any(not math.isfinite(v) or v <= 0 for p in grid for r in p for v in r):
            raise ProfileError("every latency in seconds must be a finite number > 0")
        self.seconds = grid
        self._floor = min(v for p in grid for r in p for v in r)

    def time(self, batch: float, tokens_per_row: float, context: float) -> float:
        """Trilinear interpolation on the grid; linear extrapolation past its last points."""
        per_row = self.kind == "model_free"
        ib, wb = _segment(self.batches, 1 if per_row else batch)
        it, wt = _segment(self.tokens, tokens_per_row)
        ic, wc = _segment(self.contexts, context)
        value = 0.0
        for db, fb in ((0, 1.0 - wb), (1, wb)):
            if fb == 0.0:
                continue
            plane = self.seconds[ib + db]
            for dt, ft in ((0, 1.0 - wt), (1, wt)):
                if ft == 0.0:
                    continue
                row = plane[it + dt]
                low = row[ic]
                value += fb * ft * (low if wc == 0.0 else low + wc * (row[ic + 1] - low))
        value = max(value, self._floor)
        return value * batch if per_row else value

    def to_dict(self) -> dict:
        return {"kind": self.kind, "batches": list(self.batches), "tokens": list(self.tokens),
                "contexts": list(self.contexts), "seconds": self.seconds}


@dataclass
class LatencyProfile:
    """Forward latency per level of one model (and its drafters) on one machine.

    Args:
        model: the target model's name (e.g. SmolLM2-135M-Instruct).
        levels: level name ("target", a draft's name, "ngram", "suffix") -> its grid.
        meta: how it was measured (machine, threads, budget, points estimated instead of timed).
    """

    model: str
    levels: dict[str, LevelProfile]
    meta: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ProfileError("a profile needs a model name")
        if not self.levels:
            raise ProfileError("a profile needs at least one level")
        self.levels = {name: level if isinstance(level, LevelProfile) else LevelProfile(**level)
                       for name, level in self.levels.items()}

    def forward_time(self, level: str, batch: int, tokens_per_row: int, context: int) -> float:
        """Seconds for one forward of `level` over `batch` rows of `tokens_per_row` new tokens
        each, on top of `context` cached tokens (for a model-free level: `batch` proposals of
        K = `tokens_per_row`). Lookups are cached."""
        key = (level, batch, tokens_per_row, context)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        grid = self.levels.get(level)
        if grid is None:
            raise ProfileError(f"the profile of {self.model} has no level {level!r}; "
                               f"it has: {', '.join(sorted(self.levels))}")
        if batch < 1 or tokens_per_row < 1 or context < 0:
            raise ValueError(f"need batch >= 1, tokens_per_row >= 1 and context >= 0, "
                             f"got {batch}, {tokens_per_row}, {context}")
        if len(self._cache) >= _MAX_CACHED_LOOKUPS:
            self._cache.clear()
        value = self._cache[key] = grid.time(batch, tokens_per_row, context)
        return value

    def merged(self, other: LatencyProfile) -> LatencyProfile:
        """This profile plus the levels of `other` (other wins where both have one)."""
        return LatencyProfile(self.model, {**self.levels, **other.levels}, {**self.meta, **other.meta})

    def to_dict(self) -> dict:
        return {"version": PROFILE_VERSION, "model": self.model, "meta": self.meta,
                "levels": {name: level.to_dict() for name, level in self.levels.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict) -> LatencyProfile:
        if not isinstance(data, dict):
            raise ProfileError("a profile must be a JSON object")
        if data.get("version") != PROFILE_VERSION:
            raise ProfileError(f"profile version {data.get('version')!r} is not supported "
                               f"(this build reads version {PROFILE_VERSION})")
        levels = data.get("levels")
        if not isinstance(levels, dict) or not all(isinstance(v, dict) for v in levels.values()):
            raise ProfileError("a profile's 'levels' must map level names to grids")
        try:
            parsed = {name: LevelProfile(**grid) for name, grid in levels.items()}
        except TypeError as error:
            raise ProfileError(f"malformed level grid: {error}") from None
        return cls(data.get("model", ""), parsed, dict(data.get("meta") or {}))

    @classmethod
    def load(cls, path: str | Path) -> LatencyProfile:
        """Read a profile; a missing, unreadable or malformed file raises ProfileError."""
        path = Path(path)
        if not path.is_file():
            raise ProfileError(f"latency profile {path} does not exist; measure one with "
                               f"`python -m engine.profile --model default --output-json {path}`")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ProfileError(f"latency profile {path} is not valid JSON: {error}") from None
        try:
            return cls.from_dict(data)
        except ProfileError as error:
            raise ProfileError(f"latency profile {path}: {error}") from None
