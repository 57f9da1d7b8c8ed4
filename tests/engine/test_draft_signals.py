"""Per-step draft signals: what a model-free drafter's next proposal looks like, read before routing."""

from __future__ import annotations

from engine.drafters import SIGNAL_LEVELS, NgramDrafter, SuffixDrafter, length_signal
from engine.executor import ModelExecutor
from engine.sampling import SamplingParams
from engine.sequence import Request


def test_ngram_signal_grows_with_the_matched_ngram_and_is_zero_without_a_match():
    ngram = NgramDrafter(max_match=3)
    assert ngram.signal("r", [1, 2, 3, 4, 5]) == 0                      # the last token never occurred before
    assert ngram.signal("r", [7, 1, 9, 8, 1]) == 1                      # only the token itself repeats
    assert ngram.signal("r", [5, 6, 7, 9, 5, 6, 7]) == SIGNAL_LEVELS    # a 3-gram repeats
    assert ngram.propose("r", [5, 6, 7, 9, 5, 6, 7], 2) == [9, 5]       # and the proposal follows that match


def test_length_signal_buckets_proposal_lengths():
    assert [length_signal(n, 8) for n in (0, 1, 3, 4, 6, 8)] == [0, 1, 1, 2, 2, 3]


def test_suffix_signal_is_the_bucketed_length_of_its_proposal():
    suffix = SuffixDrafter()
    repetitive = [1, 2, 3, 4] * 6
    assert suffix.signal("a", repetitive) == length_signal(len(suffix.propose("a", repetitive, 8)))
    assert suffix.signal("b", [10, 11, 12, 13]) == 0


def test_the_executor_reads_every_drafters_signal_for_a_row():
    executor = ModelExecutor({}, {"ngram": NgramDrafter(), "suffix": SuffixDrafter()})
    request = Request("r", [5, 6, 7, 9, 5, 6, 7], SamplingParams(max_tokens=4))
    signals = executor.signals(request)
    assert set(signals) == {"ngram", "suffix"} and signals["ngram"] == SIGNAL_LEVELS
