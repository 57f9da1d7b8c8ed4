"""The trained intermediate draft: a few decoder layers on the target's own embedding and LM head.

The draft is a plain transformers `LlamaForCausalLM` whose `embed_tokens` and LM head weight ARE
the target's tensors (no extra memory), so the engine's ModelRunner runs it unchanged, it drafts
and verifies like any model level, and `Engine(target, tok, cfg, drafts={"draft": draft})` plugs
it in. Optionally its head scores only a frequency-ranked subset of the vocabulary (FR-Spec,
arXiv 2502.14856): the costly 49152 x 576 matmul shrinks, and logits outside the subset are -inf,
so callers still see full-vocabulary logits and the draft never proposes those tokens.

On disk it is a draft checkpoint (engine/draft_checkpoint.py: `save_draft`, `load_draft`).
"""

from __future__ import annotations

import copy
import hashlib

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaForCausalLM, PreTrainedModel


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
