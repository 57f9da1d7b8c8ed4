"""Tiny random Llama models and a character tokenizer, built in code for tests and demos.

A noisy copy of the target gives a draft whose acceptance is dialled by the noise scale; a
truncated copy (fewer layers) gives a cheaper one.
"""

from __future__ import annotations

import copy
import string

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]
CHARACTERS = string.ascii_lowercase + string.digits + " .,!?\n"


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer: 3 specials + 42 characters = 45 tokens."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + list(CHARACTERS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'][0] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}a: {% endif %}"
    )
    return tokenizer


def build_tiny_llama(
    vocab_size: int = len(SPECIAL_TOKENS) + len(CHARACTERS),
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_position: int = 512,
    seed: int = 0,
    init_std: float = 0.2,
) -> LlamaForCausalLM:
    """A random Llama; a large init_std gives peaked (low-entropy) next-token distributions."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    config.initializer_range = init_std
    model = LlamaForCausalLM(config)
    return model.eval()


def noisy_copy(model: LlamaForCausalLM, noise: float, seed: int = 1) -> LlamaForCausalLM:
    """A copy with Gaussian noise (relative to each tensor's std) added to every weight."""
    clone = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in clone.parameters():
            scale = param.std() if param.numel() > 1 else param.abs()
            param.add_(torch.randn(param.shape, generator=generator) * noise * scale)
    return clone.eval()


def truncated_copy(model: LlamaForCausalLM, num_layers: int) -> LlamaForCausalLM:
    """A copy keeping only the first `num_layers` decoder layers."""
    clone = copy.deepcopy(model)
    clone.model.layers = clone.model.layers[:num_layers]
    clone.config.num_hidden_layers = num_layers
    if hasattr(clone.config, "layer_types") and clone.config.layer_types:
        clone.config.layer_types = clone.config.layer_types[:num_layers]
    return clone.eval()
