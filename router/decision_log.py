"""The decision log: one JSON line per routing decision, written by the env logger and the server.

Offline policy evaluation reads these files. One row is

    {"obs": [float, ...], "action": int, "propensity": float, "reward": float,
     "next_obs": [float, ...], "done": bool, "policy_version": str, "episode": int | str,
     "step": int}

optionally with "action_probs": [float, ...] (the logging policy's full distribution) and
"obs_spec_version": str. `propensity` is the probability the logging policy gave the action it
took; it must be in (0, 1] or importance weights are undefined.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

REQUIRED_FIELDS = ("obs", "action", "propensity", "reward", "next_obs", "done", "policy_version", "episode", "step")


def _finite_list(values: Sequence[float], name: str) -> list[float]:
    out = [float(v) for v in values]
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} has NaN or infinite values")
    return out


@dataclass
class DecisionLogRow:
    """One logged decision and what followed it; validates itself."""

    obs: list[float]
    action: int
    propensity: float
    reward: float
    next_obs: list[float]
    done: bool
    policy_version: str
    episode: int | str
    step: int
    action_probs: list[float] | None = None
    obs_spec_version: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.obs = _finite_list(self.obs, "obs")
        self.next_obs = _finite_list(self.next_obs, "next_obs")
        if len(self.next_obs) != len(self.obs):
            raise ValueError(f"next_obs has {len(self.next_obs)} features, obs {len(self.obs)}")
        if isinstance(self.action, bool) or int(self.action) != self.action or self.action < 0:
            raise ValueError(f"action must be an integer >= 0, got {self.action!r}")
        self.action = int(self.action)
        self.propensity = float(self.propensity)
        if not 0.0 < self.propensity <= 1.0:
            raise ValueError(f"propensity must be in (0, 1], got {self.propensity}")
        self.reward = float(self.reward)
        if not math.isfinite(self.reward):
            raise ValueError("reward is NaN or infinite")
        self.done = bool(self.done)
        self.step = int(self.step)
        if self.action_probs is not None:
            self.action_probs = _finite_list(self.action_probs, "action_probs")
            if self.action >= len(self.action_probs):
                raise ValueError(f"action {self.action} is outside action_probs of length {len(self.action_probs)}")
            if abs(self.action_probs[self.action] - self.propensity) > 1e-6:
                raise ValueError("propensity differs from action_probs[action]")

    def to_json(self) -> dict:
        data = asdict(self)
        extra = data.pop("extra")
        for key in ("action_probs", "obs_spec_version"):
            if data[key] is None:
                del data[key]
        data.update(extra)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "DecisionLogRow":
        missing = [key for key in REQUIRED_FIELDS if key not in data]
        if missing:
            raise ValueError(f"missing fields {missing}")
        known = set(REQUIRED_FIELDS) | {"action_probs", "obs_spec_version"}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**{k: v for k, v in data.items() if k in known}, extra=extra)


class DecisionLogWriter:
    """Append rows to a JSONL file, one flushed line per decision (safe to tail while serving)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        self.num_rows = 0

    def write(self, row: DecisionLogRow) -> None:
        if self._file is None:
            raise ValueError(f"decision log {self.path} is closed")
        self._file.write(json.dumps(row.to_json(), allow_nan=False) + "\n")
        self._file.flush()
        self.num_rows += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "DecisionLogWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_decision_log(path: str | Path) -> Iterator[DecisionLogRow]:
    """Rows of a decision log; a malformed line raises ValueError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no decision log at {path}")
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                yield DecisionLogRow.from_json(json.loads(line))
            except (json.JSONDecodeError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: bad decision log row: {exc}") from exc


def read_decision_log(path: str | Path) -> list[DecisionLogRow]:
    return list(iter_decision_log(path))
