"""The trained intermediate draft: a few decoder layers on the target's own embedding and LM head.

The draft is a plain transformers `LlamaForCausalLM` whose `embed_tokens` and LM head weight ARE
the target's tensors (no extra memory), so the engine's ModelRunner runs it unchanged, it drafts
and verifies like any model level, and `Engine(target, tok, cfg, drafts={"draft": draft})` plugs
it in. Optionally its head scores only a frequency-ranked subset of the vocabulary (FR-Spec,
arXiv 2502.14856): the costly 49152 x 576 matmul shrinks, and logits outside the subset are -inf,
so callers still see full-vocabulary logits and the draft never proposes those tokens.

On disk (`save_draft`): `draft.safetensors` with the decoder layers, the final norm and the
vocabulary subset only, plus `manifest.json`. `load_draft` refuses a draft made for another target.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LlamaForCausalLM, PreTrainedModel

from engine.models import LoadedModel, ModelLoadError, load_model

FORMAT_VERSION = 1
WEIGHTS_FILE = "draft.safetensors"
MANIFEST_FILE = "manifest.json"
VOCAB_SUBSET_KEY = "vocab_subset"
SHARED_PREFIXES = ("model.embed_tokens.", "lm_head.")
ARCHITECTURE_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "vocab_size", "rms_norm_eps")
STORAGE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
KINDS = ("draft", "eagle")          # a few-layer draft; an EAGLE feature head (engine/eagle_head.py)


class DraftMismatchError(ModelLoadError):
    """The draft checkpoint was made for another target (or is not a draft checkpoint)."""


class VocabSubsetHead(nn.Module):
    """The target's LM head restricted to `vocab_subset`; full-vocabulary logits, -inf elsewhere.

    `weight` is the target's own Parameter (shared, frozen); the engine's ModelRunner reads
    `vocab_subset` and multiplies by the subset rows only.
    """

    def __init__(self, weight: nn.Parameter, vocab_subset: torch.Tensor):
        super().__init__()
        self.weight = weight
        self.register_buffer("vocab_subset", vocab_subset.long().sort().values, persistent=False)

    @property
    def vocab_size(self) -> int:
        return self.weight.shape[0]

    def subset_weight(self) -> torch.Tensor:
        """The subset rows of the (frozen) head, copied once and again only if the weight changes."""
        key = (self.weight.data_ptr(), self.weight._version)
        if getattr(self, "_subset_key", None) != key:
            self._subset_weight = self.weight.detach()[self.vocab_subset]           # [subset, hidden]
            self._subset_key = key
        return self._subset_weight

    def subset_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., hidden] -> [..., len(vocab_subset)] logits of the subset tokens."""
        return F.linear(hidden, self.subset_weight())

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        sub = self.subset_logits(hidden)
        full = sub.new_full((*sub.shape[:-1], self.vocab_size), float("-inf"))
        return full.index_copy_(-1, self.vocab_subset, sub)                       # [..., vocab]


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
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype must be one of {sorted(STORAGE_DTYPES)}, got {self.storage_dtype!r}")
        if not self.init_layers:
            raise ValueError("a draft needs at least one decoder layer")


def architecture_of(config, num_layers: int) -> dict:
    arch = {key: getattr(config, key, None) for key in ARCHITECTURE_KEYS}
    arch["head_dim"] = arch["head_dim"] or config.hidden_size // config.num_attention_heads
    arch["num_hidden_layers"] = num_layers
    return arch


def vocab_subset_digest(vocab_subset: torch.Tensor) -> str:
    return hashlib.sha256(vocab_subset.to(torch.int64).numpy().tobytes()).hexdigest()


def build_draft(target: PreTrainedModel, init_layers: list[int] | tuple[int, ...],
                vocab_subset: torch.Tensor | None = None) -> LlamaForCausalLM:
    """A draft whose decoder layers start as copies of `target`'s layers `init_layers` (in that
    order) and whose embedding and LM head are the target's own modules/Parameter.

    Raises ValueError for a layer index out of range or a non-Llama target.
    """
    config = target.config
    if config.model_type != "llama":
        raise ValueError(f"drafts are built for Llama-family targets, got {config.model_type!r}")
    num_target_layers = len(target.model.layers)
    init_layers = [int(i) for i in init_layers]
    if not init_layers or any(not 0 <= i < num_target_layers for i in init_layers):
        raise ValueError(f"init_layers must be indices in [0, {num_target_layers}), got {init_layers}")
    draft_config = copy.deepcopy(config)
    draft_config.num_hidden_layers = len(init_layers)
    if getattr(draft_config, "layer_types", None):
        draft_config.layer_types = [config.layer_types[i] for i in init_layers]
    if hasattr(draft_config, "quantization_config"):
        del draft_config.quantization_config
    with torch.device("meta"):
        draft = LlamaForCausalLM(draft_config)
    inner = draft.model
    inner.embed_tokens = target.model.embed_tokens
    inner.layers = nn.ModuleList(copy.deepcopy(target.model.layers[i]) for i in init_layers)
    for index, layer in enumerate(inner.layers):
        layer.self_attn.layer_idx = index
    inner.norm = copy.deepcopy(target.model.norm)
    inner.rotary_emb = copy.deepcopy(target.model.rotary_emb)
    if vocab_subset is None:
        draft.lm_head = target.lm_head
    else:
        subset = torch.as_tensor(vocab_subset).long()
        if subset.ndim != 1 or not len(subset) or subset.unique().numel() != subset.numel() \
                or int(subset.min()) < 0 or int(subset.max()) >= config.vocab_size:
            raise ValueError(f"vocab_subset must be distinct token ids in [0, {config.vocab_size})")
        draft.lm_head = VocabSubsetHead(target.lm_head.weight, subset)
    for param in (inner.embed_tokens.weight, draft.lm_head.weight):
        param.requires_grad_(False)
    return draft.eval()


def vocab_subset_of(draft: PreTrainedModel) -> torch.Tensor | None:
    return getattr(draft.lm_head, "vocab_subset", None)


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
    command = "distill.draft" if kind == "draft" else "distill.eagle"
    if manifest.target_sha256 != target.sha256:
        raise DraftMismatchError(
            f"{kind} at {path} was distilled for target {manifest.target_name!r} "
            f"(sha256 {manifest.target_sha256[:12]}...), not for {target.name!r} (sha256 {target.sha256[:12]}...); "
            f"train one for this model with `python -m {command} --model ...`")
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


def load_draft(path: str | Path, target: LoadedModel) -> LlamaForCausalLM:
    """Load a draft onto `target` (in fp32, sharing its embedding and head); errors as check_manifest's."""
    manifest = check_manifest(path, target, "draft")
    tensors, subset = read_weights(path, manifest)
    return copy_weights(build_draft(target.model, manifest.init_layers, subset), tensors, path)


def is_draft_checkpoint(path: str | Path) -> bool:
    """A directory `save_draft` wrote: it holds the draft manifest."""
    return (Path(path) / MANIFEST_FILE).exists()


def load_draft_level(path: str | Path, target: LoadedModel) -> PreTrainedModel:
    """A model level for `Engine(drafts=...)`: a distilled draft or EAGLE head checkpoint (checked
    against `target`) or any local causal LM that shares the target's tokenizer."""
    if is_draft_checkpoint(path):
        if read_manifest(path).kind == "eagle":
            from engine.eagle_head import load_eagle_head
            return load_eagle_head(path, target)
        return load_draft(path, target)
    return load_model(str(path)).model
