"""Loading the target (and describing its trained draft) and encoding prompts, as every benchmark does."""

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


def load_bench_model(model: str, num_threads: int = 0):
    """The target as a LoadedModel, with torch's threads set first (0 keeps its default) and
    transformers' logging quiet; `Engine.from_pretrained` takes it once the prompts set its length."""
    import torch
    from transformers.utils import logging as hf_logging

    from engine.models import load_model

    hf_logging.set_verbosity_error()
    if num_threads:
        torch.set_num_threads(num_threads)
    return load_model(model)


def draft_spec(draft: str, required: bool):
    """The trained draft as a level: absent, it is an error when `required` (saying how to train
    one), else the benchmark runs without it (and says so: `report_missing_draft`)."""
    from engine.build import DraftSpec

    return DraftSpec("draft", resolve_checkpoint(draft), if_absent="error" if required else "skip")


def report_missing_draft(engine) -> None:
    if "draft" not in engine.levels:
        print(f"{engine.draft_notes['draft']}; only the ngram and suffix chains run", flush=True)
