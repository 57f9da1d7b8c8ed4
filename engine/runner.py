"""A compact Llama-family model runner: ragged batches over a KVCache, on the model's own weights.

transformers loads the weights and is the reference in tests; the forward here is our own so
that every row of a batch has its own position and length and rollback is a length move.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from engine.attention import invariant_attention_rows
from engine.forward_index import ForwardIndex, rotary_tables, rotate
from engine.heap import return_freed_memory
from engine.kv_cache import KVCache
from engine.layer_weights import LayerWeights, fused_product, head_product, layer_weights, subset_head
from engine.linear_kernels import k_major, k_major_in_place

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2")


class ModelRunner:
    """Runs one causal LM over slots of its own KVCache, in the model's dtype and on its device.

    `forward(slots, tokens, num_logits)` appends `tokens[i]` to slot `slots[i]` (starting at
    that slot's length) and returns the fp32 logits of the last `num_logits[i]` fed positions of
    each row, left-aligned in a `[batch, max(num_logits), vocab]` tensor.

    Precision follows transformers: norms and rotary angles are computed in fp32 and cast back,
    attention accumulates in fp32 inside SDPA, the KV cache holds the model dtype. Every forward
    passes an explicit mask to the same attention kernel, so a decode step and a verification
    forward take the same code path.

    A step's fixed costs are kept out of the layer loop: each layer makes four product calls
    (fused q/k/v and gate/up, engine/layer_weights.py), the indices, masks and rotary angles are
    built once per forward (engine/forward_index.py), residuals add in place, and nothing in the
    loop reads a tensor's value on the host.

    Args:
        kernel: `dense` or `prepacked` (engine/linear_kernels.py). A model's products are laid
            out once and shared by every runner over it (engine/layer_weights.py).
        weights: `dense`, or `int8` / `int4` weight-only quantization (a different model).
        head_weights: the LM head's format. `dense` for a target (the head is the tied
            embedding); a quantized copy of the target that drafts quantizes its head too, since
            the fp32 head is a quarter of its step.
        release_weights: where a kernel holds its own layout of a decoder matrix, free the model's
            copy (one copy of each weight in memory). The model's decoder layers are then empty
            shells: only for a runner that owns its model (the Engine's).
        keep_features: also write every fed position's final hidden state (before the final
            norm) into `cache.features`, one indexed copy per forward, so that an EAGLE level
            (engine/eagle_level.py) reads the target's features of committed positions.
        invariant: attend with `engine.attention.invariant_attention` instead of SDPA, so a
            position's logits are the same bits whether it is decoded alone, verified among
            drafted tokens or batched with other rows, wherever the products are row-invariant
            too (the forward-path self-test, engine/autotune.py, checks both on the loaded model).

    A model whose `model.feature_fc` exists is an EAGLE head (engine/eagle_head.py): its input
    is `feature_fc(concat(embedding, final_norm(features)))`, so `forward` then needs `features`.
    """

    def __init__(self, model: PreTrainedModel, max_len: int | None = None, kernel: str = "dense",
                 weights: str = "dense", release_weights: bool = False, head_weights: str = "dense",
                 keep_features: bool = False, invariant: bool = False):
        config = model.config
        if config.model_type not in SUPPORTED_ARCHITECTURES:
            raise ValueError(f"unsupported architecture {config.model_type!r}; "
                             f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
        self.config = config
        self.kernel = kernel
        self.weights = weights
        self.release_weights = release_weights
        self.invariant = invariant
        self.vocab_size = config.vocab_size
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.eps = config.rms_norm_eps
        self.max_len = max_len or config.max_position_embeddings
        inner = model.model
        self.dtype = inner.embed_tokens.weight.dtype
        self.device = inner.embed_tokens.weight.device
        self.final_norm = inner.norm.weight.detach()
        self.vocab_subset = getattr(model.lm_head, "vocab_subset", None)
        head = model.lm_head.weight
        # the head keeps the model's storage (a tied head is the embedding, which F.embedding
        # reads); prepacked, it is a second copy of the vocabulary matrix (113 MB in fp32 for
        # SmolLM2) that keeps 9-token verification at 1.1x a decode step instead of 1.5x
        if kernel == "dense":
            head = k_major_in_place(head)
        # after the re-lay: a tied embedding is that same parameter, and reading it first would
        # keep its old storage alive (a second copy of the vocabulary matrix). F.embedding
        # gathers rows of the input-major view at the same speed for a decode or a prefill.
        self.embed = inner.embed_tokens.weight.detach()
        # a draft head over a reduced vocabulary (engine/draft_model.py VocabSubsetHead): score
        # only those rows, return -inf for the rest so callers still see the full vocabulary
        if self.vocab_subset is not None:
            self.vocab_subset = self.vocab_subset.to(self.device)
            rows = k_major(head.detach()[self.vocab_subset])
            self.lm_head = subset_head(model.lm_head.weight, self.vocab_subset, rows, kernel, head_weights)
        else:
            self.lm_head = head_product(model.lm_head, head.detach(), kernel, head_weights)
        self.layers = [layer_weights(layer, kernel, weights, release_weights) for layer in inner.layers]
        fc = getattr(inner, "feature_fc", None)
        self.feature_fc = None if fc is None else fused_product(
            (fc,), "feature_fc", kernel, weights, release_weights)                             # 2 hidden -> hidden
        rotary = inner.rotary_emb
        self.cos, self.sin = rotary_tables(rotary.inv_freq, float(getattr(rotary, "attention_scaling", 1.0)),
                                           self.max_len, self.dtype, self.device)             # [max_len, d] each
        self.cache = KVCache(len(self.layers), self.num_kv_heads, self.head_dim, self.max_len,
                             dtype=self.dtype, device=self.device,
                             feature_size=config.hidden_size if keep_features else 0)
        return_freed_memory()           # the weights' old layouts

    def timing_features(self, batch: int, width: int) -> torch.Tensor | None:
        """Zero features for an EAGLE head's forward where only its cost matters (profiles,
        benchmarks): [batch, width, hidden]; None for any other model."""
        if self.feature_fc is None:
            return None
        return torch.zeros(batch, width, self.config.hidden_size, dtype=self.dtype, device=self.device)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """transformers' RMSNorm (fp32 statistics, cast back, times the weight), one fused op in
        fp32 (the same bits as the op-by-op form)."""
        if x.dtype == torch.float32:
            return F.rms_norm(x, weight.shape, weight, self.eps)
        return weight * F.rms_norm(x.float(), weight.shape, None, self.eps).to(x.dtype)

    @torch.inference_mode()
    def forward(self, slots: list[int], tokens: list[list[int]], num_logits: list[int],
                features: torch.Tensor | None = None, return_hidden: bool = False):
        """Also `features` [b, max(len(tokens[i])), hidden] (an EAGLE head's input, padded like the
        tokens); with `return_hidden`, (logits, hidden) where hidden [b, width, hidden] are the
        final hidden states of the fed positions before the final norm, padded."""
        if (features is None) != (self.feature_fc is None):
            raise ValueError("an EAGLE head's forward needs features; any other model's takes none")
        cache = self.cache
        counts = [len(t) for t in tokens]
        if min(counts) < 1:
            raise ValueError("every row must feed at least one token")
        starts = [cache.lengths[s] for s in slots]
        ends = [s + n for s, n in zip(starts, counts)]
        cache.ensure_capacity(max(ends))
        index = ForwardIndex.build(slots, tokens, starts, self.cos, self.sin, cache.capacity, self.invariant,
                                   self.num_heads // self.num_kv_heads)
        x = F.embedding(index.tokens, self.embed)                                               # [b, t, hidden]
        if features is not None:
            normed = self._rms_norm(features.to(self.device, x.dtype), self.final_norm)          # [b, t, hidden]
            x = self.feature_fc(torch.cat([x, normed], dim=-1))                                  # [b, t, hidden]
        for layer, cache_k, cache_v in zip(self.layers, cache.keys, cache.values):
            x = self._layer(layer, x, index, cache_k, cache_v)
        for slot, end in zip(slots, ends):
            cache.lengths[slot] = end
        if cache.features is not None:
            fed = x.flatten(0, 1)
            if index.flat_index is not None:
                fed = fed.index_select(0, index.flat_index)
            cache.features[index.write_slots, index.write_pos] = fed
        return self._logits(x, counts, num_logits, return_hidden)

    def _layer(self, layer: LayerWeights, x: torch.Tensor, index: ForwardIndex, cache_k: torch.Tensor,
               cache_v: torch.Tensor) -> torch.Tensor:
        """One decoder layer over `x` [b, t, hidden], writing its keys and values into the cache;
        returns the new `x` (updated in place: the caller's `x` is the forward's own)."""
        batch, width, nh, kvh, d = index.batch, index.width, self.num_heads, self.num_kv_heads, self.head_dim
        qkv = layer.qkv(self._rms_norm(x, layer.input_norm))                                    # [b, t, (nh + 2 kvh) d]
        qk = rotate(qkv[..., : (nh + kvh) * d].unflatten(-1, (nh + kvh, d)), index.cos, index.sin)  # [b, t, nh + kvh, d]
        new_k = qk[:, :, nh:].flatten(0, 1)                                                     # [b * t, kvh, d]
        new_v = qkv[..., (nh + kvh) * d:].unflatten(-1, (kvh, d)).flatten(0, 1)               # [b * t, kvh, d]
        if index.flat_index is not None:
            new_k, new_v = new_k.index_select(0, index.flat_index), new_v.index_select(0, index.flat_index)
        cache_k[index.write_slots, :, index.write_pos] = new_k
        cache_v[index.write_slots, :, index.write_pos] = new_v
        if index.slot_index is None:
            keys = cache_k[index.first_slot: index.first_slot + batch, :, : index.span]          # [b, kvh, span, d]
            values = cache_v[index.first_slot: index.first_slot + batch, :, : index.span]
        else:
            keys = cache_k[:, :, : index.span].index_select(0, index.slot_index)                # gather the span only
            values = cache_v[:, :, : index.span].index_select(0, index.slot_index)
        q = qk[:, :, :nh]                                                                       # [b, t, nh, d]
        if index.mask is None:
            attn = invariant_attention_rows(q, keys, values, index.positions, hidden=index.hidden)  # [b, t, nh d]
        else:
            attn = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=index.mask,
                                                  enable_gqa=kvh != nh)                         # [b, nh, t, d]
            attn = attn.transpose(1, 2).reshape(batch, width, nh * d)
        x.add_(layer.o(attn))
        gate_up = layer.gate_up(self._rms_norm(x, layer.post_norm))                             # [b, t, 2 inter]
        gate, up = gate_up.chunk(2, dim=-1)
        return x.add_(layer.down(F.silu(gate).mul_(up)))

    def _logits(self, x: torch.Tensor, counts: list[int], num_logits: list[int], return_hidden: bool):
        """The fp32 logits of each row's last `num_logits[i]` fed positions: [b, max(num_logits), vocab]."""
        batch = x.shape[0]
        wanted = max(num_logits)
        picks = [[min(n - m + j, n - 1) for j in range(wanted)] for n, m in zip(counts, num_logits)]
        pick = torch.tensor(picks).to(self.device)                                              # [b, wanted]
        hidden = x.gather(1, pick[:, :, None].expand(batch, wanted, x.shape[-1]))
        logits = self.lm_head(self._rms_norm(hidden, self.final_norm)).float()                 # [b, wanted, vocab]
        if self.vocab_subset is not None:
            full = logits.new_full((batch, wanted, self.vocab_size), float("-inf"))
            logits = full.index_copy_(-1, self.vocab_subset, logits)                           # [b, wanted, vocab]
        return (logits, x) if return_hidden else logits
