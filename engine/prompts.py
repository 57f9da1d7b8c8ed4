"""Turning what a caller sends (text, token ids, chat messages) into checked prompt token ids."""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase


def encode_prompt(prompt: str | list[int] | list[dict], tokenizer: PreTrainedTokenizerBase | None,
                  vocab_size: int, max_model_len: int) -> list[int]:
    """Text, token ids, or chat messages (rendered with the tokenizer's chat template); bad
    input raises ValueError."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
        if tokenizer is None:
            raise ValueError("chat messages need a tokenizer")
        encoded = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
    elif isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError("text prompts need a tokenizer")
        ids = tokenizer.encode(prompt, add_special_tokens=False) if prompt else []
    else:
        ids = list(prompt)
    if not ids:
        raise ValueError("prompt is empty")
    if any(not isinstance(t, int) or not 0 <= t < vocab_size for t in ids):
        raise ValueError(f"prompt token ids must be integers in [0, {vocab_size})")
    if len(ids) >= max_model_len:
        raise ValueError(f"prompt is longer than the context: {len(ids)} tokens, "
                         f"max_model_len is {max_model_len}")
    return ids


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None) -> set[int]:
    """Every end-of-sequence id the model's generation config, its config or the tokenizer names."""
    eos: set[int] = set()
    for source in (getattr(model.generation_config, "eos_token_id", None), model.config.eos_token_id,
                   getattr(tokenizer, "eos_token_id", None)):
        if source is not None:
            eos.update(source if isinstance(source, (list, tuple)) else [source])
    return eos
