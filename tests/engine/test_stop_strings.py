"""Stop strings: the incremental check finds what a scan of the whole output finds, and a stop
string that arrives split across two commits (two streamed chunks) still stops the request."""

from __future__ import annotations

import random

from engine import FinishReason, SamplingParams
from engine.config import EngineConfig
from engine.scheduler import Scheduler
from engine.sequence import Request
from engine.stop_strings import find_stop, num_stable_chars


def full_scan(text: str, stop: list[str]) -> int | None:
    hits = [text.find(s) for s in stop if s in text]
    return min(hits) if hits else None


def test_incremental_scan_finds_what_a_full_scan_finds():
    rng = random.Random(0)
    for _ in range(500):
        stop = ["".join(rng.choice("ab") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
        text, scanned, found = "", 0, None
        while found is None and len(text) < 40:
            text += "".join(rng.choice("abc") for _ in range(rng.randint(1, 3)))      # one token's text
            found = find_stop(text, stop, scanned)
            assert found == full_scan(text, stop)
            scanned = num_stable_chars(text)


def test_trailing_half_characters_are_scanned_again():
    assert num_stable_chars("ab\ufffd\ufffd") == 2
    assert find_stop("abé", ["bé"], num_stable_chars("ab\ufffd")) == 1


def char_scheduler() -> Scheduler:
    """A scheduler whose tokens are characters (token id = code point)."""
    return Scheduler(EngineConfig(max_model_len=256), eos_token_ids=set(),
                     detokenize=lambda ids: "".join(map(chr, ids)))


def test_a_stop_string_split_across_two_commits_stops_the_request():
    scheduler = char_scheduler()
    request = Request("r", [1, 2, 3], SamplingParams(max_tokens=50, stop=["STOP", "xyz"]))
    scheduler.add(request)
    scheduler.admit()
    assert scheduler.commit(request, [ord(c) for c in "hello ST"]) == [ord(c) for c in "hello ST"]
    assert not request.is_finished
    appended = scheduler.commit(request, [ord(c) for c in "OP and more"])
    assert [chr(t) for t in appended] == list("OP")              # nothing after the stop string's last token
    assert request.finish_reason is FinishReason.STOP and request.stop_text_end == len("hello ")
