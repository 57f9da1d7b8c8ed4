"""What `Engine.from_pretrained` loads: the target and its draft levels, from one description.

A command describes its engine as the model ('default', a local HF directory or .gguf, or a
LoadedModel already in hand), its draft levels as DraftSpecs and an EngineConfig (forward path,
the target's quantized copies `int4` / `int8`, limits); the Engine then casts the models, runs
the forward-path self-test where the config says `auto` and builds the quantized copies. Each
DraftSpec says what an absent or unusable checkpoint means for that command: the server runs
without a default EAGLE head made for another model, a benchmark that needs the draft stops and
says how to train one. An absent required checkpoint fails before the (slow) target load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedModel

from engine.draft_checkpoint import KINDS, MANIFEST_FILE, is_draft_checkpoint, load_draft
from engine.models import LoadedModel, ModelLoadError, load_model

ON_PROBLEM = ("error", "skip")


class MissingDraftError(ModelLoadError):
    """A required draft level has nothing at its path (raised before the target is loaded)."""


@dataclass(frozen=True)
class DraftSpec:
    """One draft level to load onto the target.

    Args:
        name: the level's name in chains (`draft`, `eagle`, ...).
        path: the checkpoint directory (`python -m distill.draft` / `distill.eagle`); with kind
            None also any local causal LM (HF directory or .gguf) sharing the target's tokenizer.
        kind: "draft" or "eagle": the checkpoint must be of this kind; None: whatever path holds.
        if_absent: "error" (MissingDraftError) or "skip" (no level) when nothing is at path: no
            manifest.json for a checkpoint kind, no file or directory at all for kind None.
        if_unusable: "error" or "skip" (no level, and the note says why) for a checkpoint made
            for another target, architecture or kind, or one whose files do not load.
    """

    name: str
    path: str | Path
    kind: str | None = "draft"
    if_absent: str = "error"
    if_unusable: str = "error"

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"kind must be None or one of {tuple(KINDS)}, got {self.kind!r}")
        for label, value in (("if_absent", self.if_absent), ("if_unusable", self.if_unusable)):
            if value not in ON_PROBLEM:
                raise ValueError(f"{label} must be one of {ON_PROBLEM}, got {value!r}")

    @property
    def location(self) -> Path:
        return Path(self.path).expanduser()

    def absence(self) -> str | None:
        """Why there is nothing to load at `path`, or None when there is something."""
        if self.kind is None:
            return None if self.location.exists() else f"draft {self.name!r}: path {self.location} does not exist"
        if is_draft_checkpoint(self.location):
            return None
        kind = KINDS[self.kind]
        return (f"no {kind.label} at {self.location} (no {MANIFEST_FILE}); "
                f"train one with `python -m {kind.train_command}`")


@dataclass
class PretrainedModels:
    """The loaded target, its draft models by level name and a note per DraftSpec: loaded, or why not."""

    target: LoadedModel
    drafts: dict[str, PreTrainedModel]
    notes: dict[str, str]


def check_required(specs: Sequence[DraftSpec]) -> None:
    """MissingDraftError for the first spec that must be there and is not (cheap: no model is loaded)."""
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"draft level names repeat: {names}")
    for spec in specs:
        why = spec.absence()
        if why is not None and spec.if_absent == "error":
            raise MissingDraftError(why)


def load_drafts(specs: Sequence[DraftSpec], target: LoadedModel) -> tuple[dict[str, PreTrainedModel], dict[str, str]]:
    """The draft models of `specs` that load onto `target`, and a note per spec (in spec order);
    raises as check_required and, for a spec whose `if_unusable` is "error", as load_draft."""
    models: dict[str, PreTrainedModel] = {}
    notes: dict[str, str] = {}
    for spec in specs:
        why = spec.absence()
        if why is not None:
            notes[spec.name] = why
            continue
        try:
            models[spec.name] = load_draft(spec.location, target, spec.kind)
        except ModelLoadError as error:
            if spec.if_unusable == "error":
                raise
            label = KINDS[spec.kind].label if spec.kind else "draft"
            notes[spec.name] = f"{label} {spec.path} not used: {error}"
        else:
            notes[spec.name] = f"loaded {spec.path}"
    return models, notes


def load_pretrained(model: str | LoadedModel, drafts: Sequence[DraftSpec] = ()) -> PretrainedModels:
    """The target (`model` as engine.models.load_model takes it, or already loaded) and its drafts."""
    check_required(drafts)                  # before the target: loading it is the slow part
    target = model if isinstance(model, LoadedModel) else load_model(model)
    models, notes = load_drafts(drafts, target)
    return PretrainedModels(target, models, notes)
