"""Streaming text: deltas add up to the full text, never split a character, never leak a stop string."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from serving.detokenizer import IncrementalDetokenizer


@pytest.fixture(scope="module")
def byte_tokenizer():
    """Byte-level BPE without merges: one token per byte, so 'é' is two tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def stream(detokenizer, ids, step: int = 1, final_text=None) -> list[str]:
    deltas = [detokenizer.push(ids[:end]) for end in range(step, len(ids), step)]
    deltas.append(detokenizer.push(ids, finished=True, final_text=final_text))
    return deltas


@pytest.mark.parametrize("step", [1, 3])
def test_deltas_rebuild_the_text_without_broken_characters(byte_tokenizer, step):
    text = "héllo wörld — ünïcode ✓ 日本語"
    ids = byte_tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) > len(text)                         # multi-byte characters span several tokens
    deltas = stream(IncrementalDetokenizer(byte_tokenizer), ids, step)
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)


def test_stop_strings_are_held_back_until_the_end(tokenizer):
    ids = tokenizer.encode("abc stop", add_special_tokens=False)
    detokenizer = IncrementalDetokenizer(tokenizer, stop=["stop"])
    shown = "".join(detokenizer.push(ids[:end]) for end in range(1, len(ids)))    # up to "abc sto"
    assert shown == "abc "                      # len("stop") - 1 characters wait: they may start the stop string
    final = detokenizer.push(ids, finished=True, final_text="abc ")   # the engine cut the text at "stop"
    assert shown + final == "abc "


def test_held_back_text_is_released_when_no_stop_string_follows(tokenizer):
    ids = tokenizer.encode("abc sto", add_special_tokens=False)
    detokenizer = IncrementalDetokenizer(tokenizer, stop=["stop"])
    shown = "".join(detokenizer.push(ids[:end]) for end in range(1, len(ids)))
    assert shown + detokenizer.push(ids, finished=True, final_text="abc sto") == "abc sto"
