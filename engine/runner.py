"""A compact Llama-family model runner: ragged batches over a KVCache, on the model's own weights.

transformers loads the weights and is the reference in tests; the forward here is our own so
that every row of a batch has its own position and length and rollback is a length move.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from engine.attention import ATTENTION_BLOCK, hidden_keys, invariant_attention
from engine.draft_model import vocab_subset_digest
from engine.heap import return_freed_memory
from engine.kv_cache import KVCache
from engine.linear_kernels import (
    Linear,
    PrepackedLinear,
    k_major,
    k_major_in_place,
    make_linear,
)

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2")

# A model's matrix is laid out for a kernel once, and every runner over that model shares the
# product (one copy in memory; a weight released to a prepacked layout still serves the next
# runner). Keyed weakly by the nn.Linear, so a model's products go with it and a deep copy of
# the model (a draft's initial layers) starts with none.
_PRODUCTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# reduced-vocabulary heads by (id of the full head's Parameter, kernel, weights, subset digest):
# a tensor cannot key a WeakKeyDictionary (its == is elementwise), so each entry holds a weak
# reference to check that the id still names that Parameter, and goes when the Parameter does
_SUBSET_HEADS: dict[tuple, tuple[weakref.ref, Linear]] = {}


def _subset_head(weight: torch.Tensor, subset: torch.Tensor, rows: torch.Tensor, kernel: str,
                 head_weights: str) -> Linear:
    """The product of `rows` (the subset's rows of `weight`), one per (head, subset, kernel)."""
    key = (id(weight), kernel, head_weights, vocab_subset_digest(subset.cpu()))
    entry = _SUBSET_HEADS.get(key)
    if entry is not None and entry[0]() is weight:
        return entry[1]
    product = make_linear(rows, None, kernel, head_weights)
    _SUBSET_HEADS[key] = (weakref.ref(weight), product)
    weakref.finalize(weight, _SUBSET_HEADS.pop, key, None)
    return product


@dataclass
class LayerWeights:
    """One decoder layer: its products (sharing the model's weights where the kernel's layout
    allows) and its norm weights."""

    q: Linear                  # hidden -> nh * d
    k: Linear                  # hidden -> kvh * d
    v: Linear                  # hidden -> kvh * d
    o: Linear                  # nh * d -> hidden
    gate: Linear               # hidden -> inter
    up: Linear                 # hidden -> inter
    down: Linear               # inter -> hidden
    input_norm: torch.Tensor   # [hidden]
    post_norm: torch.Tensor    # [hidden]

    @property
    def products(self) -> tuple[Linear, ...]:
        return self.q, self.k, self.v, self.o, self.gate, self.up, self.down


class ModelRunner:
    """Runs one causal LM over slots of its own KVCache, in the model's dtype and on its device.

    `forward(slots, tokens, num_logits)` appends `tokens[i]` to slot `slots[i]` (starting at
    that slot's length) and returns the fp32 logits of the last `num_logits[i]` fed positions of
    each row, left-aligned in a `[batch, max(num_logits), vocab]` tensor.

    Precision follows transformers: norms and rotary angles are computed in fp32 and cast back,
    attention accumulates in fp32 inside SDPA, the KV cache holds the model dtype. Every forward
    passes an explicit mask to the same attention kernel, so a decode step and a verification
    forward take the same code path.

    Args:
        kernel: `dense` or `prepacked` (engine/linear_kernels.py).
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
            head = k_major(head.detach()[self.vocab_subset])
        self.lm_head = self._head_product(model.lm_head, head.detach(), kernel, head_weights)
        self.layers = [self._layer_weights(layer) for layer in inner.layers]
        fc = getattr(inner, "feature_fc", None)
        self.feature_fc = None if fc is None else self._product(fc)                          # 2 hidden -> hidden
        rotary = inner.rotary_emb
        positions = torch.arange(self.max_len, dtype=torch.float32, device=self.device)
        freqs = torch.outer(positions, rotary.inv_freq.float().to(self.device))
        angles = torch.cat([freqs, freqs], dim=-1)
        scale = float(getattr(rotary, "attention_scaling", 1.0))
        self.cos = (angles.cos() * scale).to(self.dtype)                              # [max_len, d]
        self.sin = (angles.sin() * scale).to(self.dtype)
        self.cache = KVCache(len(self.layers), self.num_kv_heads, self.head_dim, self.max_len,
                             dtype=self.dtype, device=self.device,
                             feature_size=config.hidden_size if keep_features else 0)
        return_freed_memory()           # the weights' old layouts

    def _head_product(self, module, head: torch.Tensor, kernel: str, head_weights: str) -> Linear:
        """The LM head's product, shared by every runner over the same head: a target and its
        quantized copy score with one prepacked head, and drafts over the same reduced vocabulary
        of the target's head (the distilled draft and the EAGLE head: 36 MB each) with one."""
        if self.vocab_subset is not None:
            return _subset_head(module.weight, self.vocab_subset, head, kernel, head_weights)
        products = _PRODUCTS.setdefault(module, {})
        key = ("head", kernel, head_weights)
        if key not in products:
            products[key] = make_linear(head, None, kernel, head_weights)
        return products[key]

    def _product(self, proj) -> Linear:
        """The kernel's product of one nn.Linear, shared by every runner over the same model."""
        shares = self.kernel == "dense" and self.weights == "dense"
        products = _PRODUCTS.setdefault(proj, {})
        key = (self.kernel, self.weights)
        if key in products:
            return products[key]
        if proj.weight.numel() == 0:         # released: restore it exactly from a prepacked layout
            source = next((p for p in products.values() if isinstance(p, PrepackedLinear)), None)
            if source is None:
                raise ValueError(f"this model's weights were released to the {sorted(products)} kernels; "
                                 f"load it again for {key}")
            proj.weight.data = source.dense_weight()
        weight = k_major_in_place(proj.weight) if shares else proj.weight.detach()
        bias = None if proj.bias is None else proj.bias.detach()
        products[key] = make_linear(weight, bias, self.kernel, self.weights)
        if self.release_weights and not shares:
            proj.weight.data = proj.weight.data.new_empty(0)
        return products[key]

    def _layer_weights(self, layer) -> LayerWeights:
        """The layer's products. Dense kernels share the model's parameters, re-laid K-major in
        place. Not fused: a fused q/k/v or gate/up matrix would be a second copy of them (or
        leave the model's parameters as strided views into one storage, which transformers'
        save_pretrained cannot write), and separate products cost the same (torch 2.13, one
        thread, SmolLM2 shapes, 30 layers: 1 row 8.0 -> 8.6 ms, 16 rows 73 -> 63 ms)."""
        attn, mlp = layer.self_attn, layer.mlp
        linear = self._product
        return LayerWeights(
            q=linear(attn.q_proj), k=linear(attn.k_proj), v=linear(attn.v_proj), o=linear(attn.o_proj),
            gate=linear(mlp.gate_proj), up=linear(mlp.up_proj), down=linear(mlp.down_proj),
            input_norm=layer.input_layernorm.weight.detach(),
            post_norm=layer.post_attention_layernorm.weight.detach(),
        )

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
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * h.to(x.dtype)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    @torch.inference_mode()
    def forward(self, slots: list[int], tokens: list[list[int]], num_logits: list[int],
                features: torch.Tensor | None = None, return_hidden: bool = False):
        """Also `features` [b, max(len(tokens[i])), hidden] (an EAGLE head's input, padded like the
        tokens); with `return_hidden`, (logits, hidden) where hidden [b, width, hidden] are the
        final hidden states of the fed positions before the final norm, padded."""
        if (features is None) != (self.feature_fc is None):
            raise ValueError("an EAGLE head's forward needs features; any other model's takes none")
        cache = self.cache
        batch = len(slots)
        counts = [len(t) for t in tokens]
        if min(counts) < 1:
            raise ValueError("every row must feed at least one token")
        starts = [cache.lengths[s] for s in slots]
        ends = [s + n for s, n in zip(starts, counts)]
        cache.ensure_capacity(max(ends))
        width = max(counts)
        span = max(ends)
        device = self.device
        # index tensors, built once per step on the host and moved in one copy each
        padded_host = [toks + [0] * (width - len(toks)) for toks in tokens]
        padded = torch.tensor(padded_host, dtype=torch.long).to(device, non_blocking=True)     # [b, t]
        start_t = torch.tensor(starts).to(device, non_blocking=True)
        offsets = torch.arange(width, device=device)
        positions = (start_t[:, None] + offsets[None, :]).clamp(max=self.max_len - 1)            # [b, t]
        # rows write their real tokens only: flat (slot, position) pairs, a ragged batch's
        # padding left out by one index computed here instead of a boolean mask per layer
        ragged = min(counts) != width
        flat_rows = [i * width + j for i, n in enumerate(counts) for j in range(n)] if ragged else None
        flat_index = None if flat_rows is None else torch.tensor(flat_rows).to(device, non_blocking=True)
        write_slots = torch.tensor([s for s, n in zip(slots, counts) for _ in range(n)]).to(device, non_blocking=True)
        write_pos = torch.tensor([p for s, n in zip(starts, counts) for p in range(s, s + n)]).to(device, non_blocking=True)
        contiguous = slots == list(range(slots[0], slots[0] + batch))
        slot_t = None if contiguous else torch.tensor(slots).to(device, non_blocking=True)
        if self.invariant:     # whole key blocks: the cache's capacity is a multiple of a block
            span = min(-(-span // ATTENTION_BLOCK) * ATTENTION_BLOCK, cache.capacity)
            mask = None
            hidden = hidden_keys(positions, span, self.num_heads // self.num_kv_heads)     # every layer's
        else:
            key_pos = torch.arange(span, device=device)
            mask = key_pos[None, None, None, :] <= positions[:, None, :, None]                  # [b, 1, t, span]
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]                   # [b, 1, t, d]

        nh, kvh, d = self.num_heads, self.num_kv_heads, self.head_dim
        x = F.embedding(padded, self.embed)                                                     # [b, t, hidden]
        if features is not None:
            normed = self._rms_norm(features.to(device, x.dtype), self.final_norm)               # [b, t, hidden]
            x = self.feature_fc(torch.cat([x, normed], dim=-1))                                  # [b, t, hidden]
        for index, layer in enumerate(self.layers):
            h = self._rms_norm(x, layer.input_norm)
            q = self._rotate(layer.q(h).view(batch, width, nh, d).transpose(1, 2), cos, sin)   # [b, nh, t, d]
            k = self._rotate(layer.k(h).view(batch, width, kvh, d).transpose(1, 2), cos, sin)  # [b, kvh, t, d]
            v = layer.v(h).view(batch, width, kvh, d)                                         # [b, t, kvh, d]
            new_k = k.transpose(1, 2).reshape(batch * width, kvh, d)                          # [b * t, kvh, d]
            new_v = v.reshape(batch * width, kvh, d)
            if flat_index is not None:
                new_k, new_v = new_k.index_select(0, flat_index), new_v.index_select(0, flat_index)
            cache_k, cache_v = cache.keys[index], cache.values[index]
            cache_k[write_slots, :, write_pos] = new_k
            cache_v[write_slots, :, write_pos] = new_v
            if contiguous:
                keys = cache_k[slots[0]: slots[0] + batch, :, :span]
                values = cache_v[slots[0]: slots[0] + batch, :, :span]
            else:
                keys = cache_k[:, :, :span].index_select(0, slot_t)      # gather the span only
                values = cache_v[:, :, :span].index_select(0, slot_t)
            if mask is None:
                attn = invariant_attention(q, keys, values, positions, hidden=hidden)           # [b, nh, t, d]
            else:
                attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=kvh != nh)
            x = x + layer.o(attn.transpose(1, 2).reshape(batch, width, nh * d))
            h = self._rms_norm(x, layer.post_norm)
            x = x + layer.down(F.silu(layer.gate(h)) * layer.up(h))
        for slot, end in zip(slots, ends):
            cache.lengths[slot] = end
        if cache.features is not None:
            fed = x.reshape(batch * width, -1)
            cache.features[write_slots, write_pos] = fed if flat_index is None else fed.index_select(0, flat_index)

        wanted = max(num_logits)
        picks = [[min(n - m + j, n - 1) for j in range(wanted)] for n, m in zip(counts, num_logits)]
        pick = torch.tensor(picks).to(device, non_blocking=True)                                # [b, wanted]
        hidden = x.gather(1, pick[:, :, None].expand(batch, wanted, x.shape[-1]))
        logits = self.lm_head(self._rms_norm(hidden, self.final_norm)).float()                 # [b, wanted, vocab]
        if self.vocab_subset is not None:
            full = logits.new_full((batch, wanted, self.vocab_size), float("-inf"))
            logits = full.index_copy_(-1, self.vocab_subset, logits)                           # [b, wanted, vocab]
        return (logits, x) if return_hidden else logits
