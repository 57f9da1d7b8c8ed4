"""The sampling values a request gets for the fields it leaves out, per model (vLLM's `--generation-config`).

OpenAI's defaults (temperature 1, top_p 1) suit large chat models; a 135M model sampled at 1.0
rambles. So, as vLLM's `--generation-config auto` does, the server takes its defaults from the
model: an HF directory's `generation_config.json` (temperature, top_p, top_k), or for the
embedded model the table below. A request's own values always win; `/v1/models` and `/ready`
show the defaults in force.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger("serving")


@dataclass(frozen=True)
class SamplingDefaults:
    """Defaults for omitted sampling fields; `source` says where they came from."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    source: str = "openai"

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"default temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"default top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"default top_k must be >= 0, got {self.top_k}")

    def to_json(self) -> dict:
        return asdict(self)


OPENAI_DEFAULTS = SamplingDefaults()

# Chosen by hand for the embedded model: at 1.0 it answers "Name three seas." with noise; at
# 0.2 / top_p 0.9 it names seas (issue 19). Keyed by the loaded model's name.
MODEL_DEFAULTS = {
    "SmolLM2-135M-Instruct": SamplingDefaults(temperature=0.2, top_p=0.9, source="builtin:SmolLM2-135M-Instruct"),
}


def from_generation_config(path: Path) -> SamplingDefaults | None:
    """The defaults an HF `generation_config.json` sets (None when it sets none or is unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("generation config %s is unreadable (%s): using OpenAI's sampling defaults", path, exc)
        return None
    values = {}
    for name, kind in (("temperature", float), ("top_p", float), ("top_k", int)):
        value = data.get(name) if isinstance(data, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[name] = kind(value)
    if not values:
        return None
    try:
        return SamplingDefaults(**values, source=f"generation_config:{path}")
    except ValueError as exc:
        logger.warning("generation config %s: %s; using OpenAI's sampling defaults", path, exc)
        return None


def resolve_sampling_defaults(mode: str, model_spec: str, model_name: str) -> SamplingDefaults:
    """`mode` is the server's --generation-config: 'auto' (the model's, else the built-in table,
    else OpenAI's), 'openai' (OpenAI's), or a path to a generation_config.json or its directory."""
    if mode == "openai":
        return OPENAI_DEFAULTS
    if mode == "auto":
        directory = Path(model_spec).expanduser()
        found = None
        if model_spec != "default" and directory.is_dir() and (directory / "generation_config.json").is_file():
            found = from_generation_config(directory / "generation_config.json")
        return found or MODEL_DEFAULTS.get(model_name, OPENAI_DEFAULTS)
    path = Path(mode).expanduser()
    path = path / "generation_config.json" if path.is_dir() else path
    if not path.is_file():
        raise ValueError(f"--generation-config {mode}: no generation_config.json there")
    return from_generation_config(path) or OPENAI_DEFAULTS
