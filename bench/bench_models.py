"""Loading the embedded model (and its trained draft) and encoding prompts, as every benchmark does."""

from __future__ import annotations

from pathlib import Path

from bench.common import REPO_ROOT


def encode_chat(tokenizer, text: str) -> list[int]:
    """One user turn rendered with the model's chat template, ready for generation."""
    encoded = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def resolve_checkpoint(path: str) -> Path:
    """A checkpoint path as given when absolute, else relative to the repository."""
    return Path(path) if Path(path).is_absolute() else REPO_ROOT / path


def load_target_and_draft(model: str, draft: str, required: bool, num_threads: int = 0):
    """(LoadedModel, {"draft": model} or {}, resolved draft path), with torch's threads set first
    (0 keeps its default) and transformers' logging quiet. A draft directory without a manifest
    is an error when `required`, else the benchmark runs without it (and says so)."""
    import torch
    from transformers.utils import logging as hf_logging

    from engine.draft_model import is_draft_checkpoint, load_draft
    from engine.models import load_model

    hf_logging.set_verbosity_error()
    if num_threads:
        torch.set_num_threads(num_threads)

    loaded = load_model(model)
    draft_path = resolve_checkpoint(draft)
    if not is_draft_checkpoint(draft_path):
        if required:
            raise FileNotFoundError(f"no trained draft at {draft_path} (no manifest.json); "
                                    "train one with `python -m distill.draft`")
        print(f"no trained draft at {draft_path} (no manifest.json): only the ngram and suffix chains run", flush=True)
        return loaded, {}, draft_path
    return loaded, {"draft": load_draft(draft_path, loaded)}, draft_path
