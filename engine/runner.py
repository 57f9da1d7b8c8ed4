"""A compact Llama-family model runner: ragged batches over a KVCache, on the model's own weights.

transformers loads the weights and is the reference in tests; the forward here is our own so
that every row of a batch has its own position and length and rollback is a length move.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from engine.heap import return_freed_memory
from engine.kv_cache import KVCache

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2")


@dataclass
class LayerWeights:
    """One decoder layer's parameters, shared with the model (never copied)."""

    q: torch.Tensor            # [nh * d, hidden]
    k: torch.Tensor            # [kvh * d, hidden]
    v: torch.Tensor            # [kvh * d, hidden]
    q_bias: torch.Tensor | None
    k_bias: torch.Tensor | None
    v_bias: torch.Tensor | None
    o: torch.Tensor            # [hidden, nh * d]
    gate: torch.Tensor         # [inter, hidden]
    up: torch.Tensor           # [inter, hidden]
    down: torch.Tensor         # [hidden, inter]
    input_norm: torch.Tensor   # [hidden]
    post_norm: torch.Tensor    # [hidden]

    @property
    def matrices(self) -> tuple[torch.Tensor, ...]:
        return self.q, self.k, self.v, self.o, self.gate, self.up, self.down


def _k_major(weight: torch.Tensor) -> torch.Tensor:
    """The same [out, in] matrix stored input-major (a transposed view of a contiguous [in, out]).

    F.linear then multiplies by a contiguous [in, out] operand: on CPU that is 1.5-2x faster for
    the few-row products of decoding and verification (measured with torch 2.13, one thread:
    1 row 22 -> 14 ms, 3 rows 41 -> 26 ms per 60 matrices of 1536 x 576), equal for long prefills.
    """
    return weight if weight.dim() != 2 or weight.stride(0) == 1 else weight.t().contiguous().t()


@torch.no_grad()
def _k_major_in_place(param: torch.Tensor) -> torch.Tensor:
    """Re-lay a model parameter K-major in place (same values; the model and any tied weight
    see it too), so the runner shares it instead of holding a second copy."""
    if param.dim() == 2 and param.stride(0) != 1:
        param.data = _k_major(param.data)
    return param.detach()


class ModelRunner:
    """Runs one causal LM over slots of its own KVCache.

    `forward(slots, tokens, num_logits)` appends `tokens[i]` to slot `slots[i]` (starting at
    that slot's length) and returns the logits of the last `num_logits[i]` fed positions of
    each row, left-aligned in a `[batch, max(num_logits), vocab]` tensor.
    """

    def __init__(self, model: PreTrainedModel, max_len: int | None = None):
        config = model.config
        if config.model_type not in SUPPORTED_ARCHITECTURES:
            raise ValueError(f"unsupported architecture {config.model_type!r}; "
                             f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
        self.config = config
        self.vocab_size = config.vocab_size
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.eps = config.rms_norm_eps
        self.max_len = max_len or config.max_position_embeddings
        inner = model.model
        self.final_norm = inner.norm.weight.detach()
        self.lm_head = _k_major_in_place(model.lm_head.weight)
        # after the re-lay: a tied embedding is that same parameter, and reading it first would
        # keep its old storage alive (a second copy of the vocabulary matrix). F.embedding
        # gathers rows of the input-major view at the same speed for a decode or a prefill.
        self.embed = inner.embed_tokens.weight.detach()
        # a draft head over a reduced vocabulary (engine/draft_model.py VocabSubsetHead): score
        # only those rows, return -inf for the rest so callers still see the full vocabulary
        self.vocab_subset = getattr(model.lm_head, "vocab_subset", None)
        if self.vocab_subset is not None:
            self.lm_head = _k_major(self.lm_head[self.vocab_subset])
        self.layers = [self._layer_weights(layer) for layer in inner.layers]
        rotary = inner.rotary_emb
        positions = torch.arange(self.max_len, dtype=torch.float32)
        freqs = torch.outer(positions, rotary.inv_freq.float())
        angles = torch.cat([freqs, freqs], dim=-1)
        scale = float(getattr(rotary, "attention_scaling", 1.0))
        self.cos, self.sin = angles.cos() * scale, angles.sin() * scale   # [max_len, d]
        self.cache = KVCache(len(self.layers), self.num_kv_heads, self.head_dim, self.max_len)
        return_freed_memory()           # the weights' old layouts

    @staticmethod
    def _layer_weights(layer) -> LayerWeights:
        """The layer's own parameters, re-laid K-major in place. Not fused: a fused q/k/v or
        gate/up matrix would be a second copy of them (or leave the model's parameters as
        strided views into one storage, which transformers' save_pretrained cannot write), and
        separate products cost the same (torch 2.13, one thread, SmolLM2 shapes, 30 layers:
        1 row 8.0 -> 8.6 ms, 16 rows 73 -> 63 ms, 1500 rows 2.87 -> 2.74 s)."""
        attn, mlp = layer.self_attn, layer.mlp

        def bias(proj) -> torch.Tensor | None:
            return None if proj.bias is None else proj.bias.detach()

        return LayerWeights(
            q=_k_major_in_place(attn.q_proj.weight),
            k=_k_major_in_place(attn.k_proj.weight),
            v=_k_major_in_place(attn.v_proj.weight),
            q_bias=bias(attn.q_proj), k_bias=bias(attn.k_proj), v_bias=bias(attn.v_proj),
            o=_k_major_in_place(attn.o_proj.weight),
            gate=_k_major_in_place(mlp.gate_proj.weight),
            up=_k_major_in_place(mlp.up_proj.weight),
            down=_k_major_in_place(mlp.down_proj.weight),
            input_norm=layer.input_layernorm.weight.detach(),
            post_norm=layer.post_attention_layernorm.weight.detach(),
        )

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(variance + self.eps) * weight

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    @torch.inference_mode()
    def forward(self, slots: list[int], tokens: list[list[int]], num_logits: list[int]) -> torch.Tensor:
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
        offsets = torch.arange(width)
        start_t = torch.as_tensor(starts)
        count_t = torch.as_tensor(counts)
        positions = (start_t[:, None] + offsets[None, :]).clamp(max=self.max_len - 1)   # [b, t]
        valid = offsets[None, :] < count_t[:, None]                                    # [b, t]
        padded = torch.zeros(batch, width, dtype=torch.long)                              # [b, t]
        padded[valid] = torch.as_tensor([t for toks in tokens for t in toks], dtype=torch.long)
        slot_t = torch.as_tensor(slots)
        write_slots = slot_t[:, None].expand(batch, width)[valid]                          # [n_valid]
        write_pos = positions[valid]                                                       # [n_valid]
        contiguous = slots == list(range(slots[0], slots[0] + batch))
        key_pos = torch.arange(span)
        mask = key_pos[None, None, None, :] <= positions[:, None, :, None]                # [b, 1, t, span]
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]             # [b, 1, t, d]

        nh, kvh, d = self.num_heads, self.num_kv_heads, self.head_dim
        x = F.embedding(padded, self.embed)                                               # [b, t, hidden]
        for index, layer in enumerate(self.layers):
            h = self._rms_norm(x, layer.input_norm)
            q = F.linear(h, layer.q, layer.q_bias)
            k = F.linear(h, layer.k, layer.k_bias)
            v = F.linear(h, layer.v, layer.v_bias)
            q = self._rotate(q.view(batch, width, nh, d).transpose(1, 2), cos, sin)      # [b, nh, t, d]
            k = self._rotate(k.view(batch, width, kvh, d).transpose(1, 2), cos, sin)     # [b, kvh, t, d]
            v = v.view(batch, width, kvh, d).transpose(1, 2)
            cache_k, cache_v = cache.keys[index], cache.values[index]
            cache_k[write_slots, :, write_pos] = k.transpose(1, 2)[valid]
            cache_v[write_slots, :, write_pos] = v.transpose(1, 2)[valid]
            if contiguous:
                keys = cache_k[slots[0]: slots[0] + batch, :, :span]
                values = cache_v[slots[0]: slots[0] + batch, :, :span]
            else:
                keys = cache_k[:, :, :span].index_select(0, slot_t)      # gather the span only
                values = cache_v[:, :, :span].index_select(0, slot_t)
            attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=kvh != nh)
            x = x + F.linear(attn.transpose(1, 2).reshape(batch, width, nh * d), layer.o)
            h = self._rms_norm(x, layer.post_norm)
            x = x + F.linear(F.silu(F.linear(h, layer.gate)) * F.linear(h, layer.up), layer.down)
        for slot, end in zip(slots, ends):
            cache.lengths[slot] = end

        wanted = max(num_logits)
        first = count_t - torch.as_tensor(num_logits)                                     # [b]
        pick = torch.minimum(torch.arange(wanted)[None, :] + first[:, None], count_t[:, None] - 1)  # [b, wanted]
        hidden = x.gather(1, pick[:, :, None].expand(batch, wanted, x.shape[-1]))
        logits = F.linear(self._rms_norm(hidden, self.final_norm), self.lm_head)          # [b, wanted, vocab]
        if self.vocab_subset is None:
            return logits
        full = logits.new_full((batch, wanted, self.vocab_size), float("-inf"))
        return full.index_copy_(-1, self.vocab_subset, logits)                           # [b, wanted, vocab]
