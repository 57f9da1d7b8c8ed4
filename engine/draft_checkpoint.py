"""The draft checkpoint format and its one loader, for both kinds: a few-layer draft and an EAGLE head.

On disk (`save_draft`): `draft.safetensors` with the model's own tensors (decoder layers, final
norm, an EAGLE head's `feature_fc`) and the vocabulary subset only, plus `manifest.json`
(DraftManifest: which target, which kind, how it was made). The target's embedding and LM head
are never stored: a loaded draft shares the target's own tensors. `load_draft` is the one way
to load a draft level; it refuses a checkpoint made for another target or of another kind.

The kinds are a small registry (KINDS): what a kind is called, which command trains one and how
its model is built around the target (engine/draft_model.py, engine/eagle_head.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from engine.draft_model import build_draft, vocab_subset_digest, vocab_subset_of
from engine.eagle_head import build_eagle_head
from engine.models import LoadedModel, ModelLoadError, load_model

FORMAT_VERSION = 1
WEIGHTS_FILE = "draft.safetensors"
MANIFEST_FILE = "manifest.json"
VOCAB_SUBSET_KEY = "vocab_subset"
SHARED_PREFIXES = ("model.embed_tokens.", "lm_head.")
ARCHITECTURE_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "vocab_size", "rms_norm_eps")
STORAGE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class CheckpointKind:
    """What a kind of draft checkpoint is called, which command trains one and how its model is built."""

    label: str                   # in messages: "no trained draft at ..."
    train_command: str           # `python -m <train_command> --model ...`
    build: Callable[[PreTrainedModel, list[int], torch.Tensor | None], PreTrainedModel]  # target, layers, subset


KINDS = {
    "draft": CheckpointKind("trained draft", "distill.draft", build_draft),
    "eagle": CheckpointKind("EAGLE head", "distill.eagle",
                            lambda target, layers, subset: build_eagle_head(target, layers[0], subset)),
}


class DraftMismatchError(ModelLoadError):
    """The draft checkpoint was made for another target (or is not a draft checkpoint)."""


@dataclass
class DraftManifest:
    """What a draft checkpoint is and how it was made (written next to the weights as JSON)."""

    target_name: str
    target_sha256: str
    architecture: dict
    init_layers: list[int]
    vocab_subset_size: int | None = None          # None: the full vocabulary
    vocab_subset_sha256: str | None = None
    storage_dtype: str = "bfloat16"
    training: dict = field(default_factory=dict)  # data, steps, time, curve, final metrics
    format_version: int = FORMAT_VERSION
    kind: str = "draft"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {tuple(KINDS)}, got {self.kind!r}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype must be one of {sorted(STORAGE_DTYPES)}, got {self.storage_dtype!r}")
        if not self.init_layers:
            raise ValueError("a draft needs at least one decoder layer")


def architecture_of(config, num_layers: int) -> dict:
    arch = {key: getattr(config, key, None) for key in ARCHITECTURE_KEYS}
    arch["head_dim"] = arch["head_dim"] or config.hidden_size // config.num_attention_heads
    arch["num_hidden_layers"] = num_layers
    return arch


def trainable_state(draft: PreTrainedModel) -> dict[str, torch.Tensor]:
    """The draft's own tensors: decoder layers and final norm (never the shared ones; an EAGLE
    head also shares the target's final norm and owns its `feature_fc`)."""
    shared = SHARED_PREFIXES + (("model.norm.",) if hasattr(draft.model, "feature_fc") else ())
    return {name: tensor for name, tensor in draft.state_dict().items()
            if not name.startswith(shared) and "rotary_emb" not in name}


def save_draft(draft: PreTrainedModel, path: str | Path, manifest: DraftManifest) -> Path:
    """Write `draft.safetensors` (own tensors in `manifest.storage_dtype`) and `manifest.json`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    dtype = STORAGE_DTYPES[manifest.storage_dtype]
    tensors = {name: t.detach().to(dtype).contiguous() for name, t in trainable_state(draft).items()}
    subset = vocab_subset_of(draft)
    manifest.vocab_subset_size = None if subset is None else int(subset.numel())
    manifest.vocab_subset_sha256 = None if subset is None else vocab_subset_digest(subset)
    if subset is not None:
        tensors[VOCAB_SUBSET_KEY] = subset.to(torch.int64).contiguous()
    save_file(tensors, str(path / WEIGHTS_FILE), metadata={"format": "specroute-draft"})
    (path / MANIFEST_FILE).write_text(json.dumps(asdict(manifest), indent=1) + "\n")
    return path


def is_draft_checkpoint(path: str | Path) -> bool:
    """A directory `save_draft` wrote: it holds the draft manifest."""
    return (Path(path) / MANIFEST_FILE).exists()


def read_manifest(path: str | Path) -> DraftManifest:
    file = Path(path) / MANIFEST_FILE
    if not file.exists():
        raise ModelLoadError(f"{path} is not a draft checkpoint: no {MANIFEST_FILE}")
    try:
        data = json.loads(file.read_text())
        return DraftManifest(**data)
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise ModelLoadError(f"{file} is not a valid draft manifest: {error}") from error


def check_manifest(path: str | Path, target: LoadedModel, kind: str) -> DraftManifest:
    """The checkpoint's manifest, once it is known to be a `kind` checkpoint made for `target`.

    Raises DraftMismatchError when the manifest names another target (sha256), architecture or
    kind, ModelLoadError when it is missing or unreadable.
    """
    if not isinstance(target, LoadedModel):
        raise TypeError(f"loading a {kind} needs the target as a LoadedModel (engine.models.load_model), whose "
                        f"sha256 the manifest is checked against; got {type(target).__name__}")
    manifest = read_manifest(path)
    if manifest.format_version != FORMAT_VERSION:
        raise ModelLoadError(f"draft format {manifest.format_version} is not supported (want {FORMAT_VERSION})")
    if manifest.kind != kind:
        raise DraftMismatchError(f"{path} holds a {manifest.kind!r} checkpoint, not a {kind!r} one")
    if manifest.target_sha256 != target.sha256:
        raise DraftMismatchError(
            f"{kind} at {path} was distilled for target {manifest.target_name!r} "
            f"(sha256 {manifest.target_sha256[:12]}...), not for {target.name!r} (sha256 {target.sha256[:12]}...); "
            f"train one for this model with `python -m {KINDS[kind].train_command} --model ...`")
    expected = architecture_of(target.model.config, len(manifest.init_layers))
    if manifest.architecture != expected:
        raise DraftMismatchError(f"{kind} architecture {manifest.architecture} does not fit the target {expected}")
    return manifest


def read_weights(path: str | Path, manifest: DraftManifest) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The checkpoint's own tensors and its vocabulary subset (checked against the manifest's digest)."""
    path = Path(path)
    if not (path / WEIGHTS_FILE).exists():
        raise ModelLoadError(f"draft weights {path / WEIGHTS_FILE} are missing")
    tensors = load_file(str(path / WEIGHTS_FILE))
    subset = tensors.pop(VOCAB_SUBSET_KEY, None)
    if (subset is None) != (manifest.vocab_subset_size is None) or (
            subset is not None and vocab_subset_digest(subset) != manifest.vocab_subset_sha256):
        raise ModelLoadError(f"draft vocabulary subset in {path} does not match its manifest")
    return tensors, subset


def copy_weights(model: PreTrainedModel, tensors: dict[str, torch.Tensor], path: str | Path) -> PreTrainedModel:
    """Fill the model's own tensors (trainable_state) from `tensors`, in fp32; ModelLoadError on a mismatch."""
    own = trainable_state(model)
    if set(tensors) != set(own):
        missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
        raise ModelLoadError(f"weights in {path} do not match: missing {missing[:4]}, unexpected {extra[:4]}")
    with torch.no_grad():
        for name, tensor in own.items():
            tensor.copy_(tensors[name].to(torch.float32))
    return model.eval()


def load_draft(path: str | Path, target: LoadedModel, kind: str | None = "draft") -> PreTrainedModel:
    """A draft level for `target` (fp32, sharing its embedding and head; an EAGLE head also its norm).

    kind "draft" or "eagle": the checkpoint at `path` must be of that kind. kind None: whatever
    `path` holds, a draft or EAGLE checkpoint, or else any local causal LM (HF directory or .gguf)
    that shares the target's tokenizer.
    Raises DraftMismatchError when the checkpoint was made for another target, architecture or kind,
    ModelLoadError when files are missing or do not match the manifest.
    """
    if kind is None:
        if not is_draft_checkpoint(path):
            return load_model(str(path)).model
        kind = read_manifest(path).kind
    manifest = check_manifest(path, target, kind)
    tensors, subset = read_weights(path, manifest)
    return copy_weights(KINDS[kind].build(target.model, manifest.init_layers, subset), tensors, path)
