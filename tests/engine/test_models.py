"""Loading a model draws no progress bars (transformers' own, or its GGUF de-quantizing bar) and
leaves transformers' progress-bar switch as it found it."""

from __future__ import annotations

from transformers import modeling_gguf_pytorch_utils as gguf_loading
from transformers.utils import logging as hf_logging

from engine.models import _quiet_loading, load_model


def test_loading_a_directory_prints_no_bar(tmp_path, target, tokenizer, capfd):
    target.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    capfd.readouterr()
    assert load_model(str(tmp_path / "tiny")).name == "tiny"
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()


def test_the_gguf_bar_is_disabled_only_during_a_load(capfd):
    bar = gguf_loading.tqdm
    with _quiet_loading():
        list(gguf_loading.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
        assert not hf_logging.is_progress_bar_enabled()
    assert "de-quantizing" not in capfd.readouterr().err
    assert gguf_loading.tqdm is bar and hf_logging.is_progress_bar_enabled()
