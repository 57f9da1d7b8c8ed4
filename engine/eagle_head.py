"""An EAGLE-1 style feature head (arXiv 2401.15077): a one-layer draft that reads the target's own features.

Input at position p is the pair (token x_{p+1}, the target's final hidden state f_p: the output of
its last decoder layer, before the final norm):

    h = feature_fc(concat(embed(x_{p+1}), final_norm(f_p)))    # [.., 2 hidden] -> [.., hidden]
    f^_{p+1} = decoder_layer(h)                                 # one Llama layer with its own KV cache
    logits of x_{p+2} = lm_head(final_norm(f^_{p+1}))           # the target's norm and (subset) head

Features enter through the target's final norm (a departure from EAGLE-1, which feeds them raw):
SmolLM2's pre-norm features have a few outlier dimensions of large magnitude that otherwise
dominate the layer's input and the feature loss (distill/eagle_loss.py compares normed features).

It is a transformers `LlamaForCausalLM` of one layer (built like engine/draft_model.py's drafts)
whose embedding, final norm and LM head ARE the target's modules, plus `model.feature_fc`; the
engine's ModelRunner runs it (it sees `feature_fc` and takes features), engine/eagle_level.py
drafts with it. The head may score a vocabulary subset (VocabSubsetHead), as the draft does.
On disk it is a draft checkpoint of kind "eagle" (engine/draft_checkpoint.py `save_draft`,
`load_draft(path, target, "eagle")`): its layer, its `feature_fc` and the subset.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaForCausalLM, PreTrainedModel

from engine.draft_model import build_draft


def is_eagle_head(model: PreTrainedModel) -> bool:
    return hasattr(getattr(model, "model", None), "feature_fc")


def build_eagle_head(target: PreTrainedModel, init_layer: int | None = None,
                     vocab_subset: torch.Tensor | None = None) -> LlamaForCausalLM:
    """An EAGLE head on `target`: its decoder layer starts as a copy of the target's layer
    `init_layer` (default: the last), `feature_fc` as [small noise | identity] so that the layer
    first sees the target's feature itself. Embedding, final norm and LM head are shared and frozen.
    """
    num_layers = len(target.model.layers)
    init_layer = num_layers - 1 if init_layer is None else int(init_layer)
    head = build_draft(target, [init_layer], vocab_subset)
    head.model.norm = target.model.norm
    hidden = target.config.hidden_size
    fc = nn.Linear(2 * hidden, hidden, bias=True)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        fc.weight.zero_()
        fc.weight[:, :hidden] = torch.randn(hidden, hidden, generator=generator) * 0.02
        fc.weight[:, hidden:] = torch.eye(hidden)
        fc.bias.zero_()
    head.model.feature_fc = fc.to(target.model.embed_tokens.weight.dtype)
    for param in head.model.norm.parameters():
        param.requires_grad_(False)
    return head.eval()


def predict_features(head: PreTrainedModel, ids: torch.Tensor, features: torch.Tensor,
                     attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The differentiable (transformers) forward used in training: ids [b, t] (x_{p+1}) and
    features [b, t, hidden] (f_p) -> predicted features f^_{p+1} [b, t, hidden] (before the norm)
    and logits of x_{p+2} over the head's scored tokens [b, t, v] (the subset, when it has one).
    Right padding only (positions never attend past themselves)."""
    inner = head.model
    captured: list[torch.Tensor] = []
    hook = inner.layers[-1].register_forward_hook(
        lambda module, args, output: captured.append(output[0] if isinstance(output, tuple) else output))
    try:
        normed = inner.norm(features.to(inner.embed_tokens.weight.dtype))
        embeds = inner.feature_fc(torch.cat([inner.embed_tokens(ids), normed], -1))
        normed = inner(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state     # [b, t, hidden]
    finally:
        hook.remove()
    lm_head = head.lm_head
    weight = lm_head.subset_weight() if hasattr(lm_head, "subset_weight") else lm_head.weight
    return captured[0], F.linear(normed, weight)
