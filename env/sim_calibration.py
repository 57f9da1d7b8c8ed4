"""What the simulator learns from real runs besides the latency profile, in one JSON file.

`profiles/acceptance_<model>.json` holds the acceptance models, how many tokens a prompt of
each category becomes (the simulator has no tokenizer), and the engine's per-step overhead
outside the model forwards (Python, drafting, verification), all fitted by `env.calibrate`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from env.acceptance_model import AcceptanceModel
from env.prompt_sources import Prompt

FORMAT = "specroute-sim-calibration-v1"
DEFAULT_CHARS_PER_TOKEN = 4.0


@dataclass
class PromptLength:
    """tokens = template_tokens + chars / chars_per_token (template only for chat prompts)."""

    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN
    template_tokens: float = 0.0


@dataclass
class SimCalibration:
    model: str
    acceptance: AcceptanceModel = field(default_factory=AcceptanceModel)
    prompt_lengths: dict[str, PromptLength] = field(default_factory=dict)
    profile_scale: float = 1.0          # measured step time / the profile's forward time
    prefill_scale: float = 1.0          # the same for forwards feeding more than `prefill_tokens` per row
    prefill_tokens: int = 0             # the profile's largest timed tokens per row (0: no split)
    step_overhead_s: float = 0.0        # per step, whatever the batch
    row_overhead_s: float = 0.0         # per row of the step

    def prompt_tokens(self, prompt: Prompt, keep: int) -> int:
        """Tokens of a prompt whose text is cut to `keep` tokens (as the real backend cuts it)."""
        length = self.prompt_lengths.get(prompt.category) or self.prompt_lengths.get("*") or PromptLength()
        template = round(length.template_tokens) if prompt.is_chat else 0
        return template + max(1, min(keep, math.ceil(len(prompt.text) / length.chars_per_token)))

    def step_time_s(self, forward_s: float, num_rows: int, prefill_s: float = 0.0) -> float:
        """A step's time from the profile's forward times, scaled (forwards past the profile's
        timed token range, i.e. prefill that it extrapolates, have their own scale), plus the
        engine's overhead outside the forwards."""
        return (self.profile_scale * forward_s + self.prefill_scale * prefill_s + self.step_overhead_s
                + self.row_overhead_s * num_rows)

    def to_json(self) -> dict:
        return {"format": FORMAT, "model": self.model, "profile_scale": self.profile_scale,
                "prefill_scale": self.prefill_scale, "prefill_tokens": self.prefill_tokens,
                "step_overhead_s": self.step_overhead_s, "row_overhead_s": self.row_overhead_s,
                "prompt_lengths": {c: vars(p).copy() for c, p in self.prompt_lengths.items()},
                **self.acceptance.to_json()}

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SimCalibration:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"simulator calibration {path} does not exist; "
                                    "write it with `python -m env.calibrate`")
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} file (format {data.get('format')!r})")
        return cls(model=data["model"], acceptance=AcceptanceModel.from_json(data),
                   prompt_lengths={c: PromptLength(**p) for c, p in data.get("prompt_lengths", {}).items()},
                   profile_scale=float(data.get("profile_scale", 1.0)),
                   prefill_scale=float(data.get("prefill_scale", 1.0)),
                   prefill_tokens=int(data.get("prefill_tokens", 0)),
                   step_overhead_s=float(data.get("step_overhead_s", 0.0)),
                   row_overhead_s=float(data.get("row_overhead_s", 0.0)))
