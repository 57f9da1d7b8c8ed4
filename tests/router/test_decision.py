"""A decision has one spelling: `Decision.parse` reads what `str(decision)` prints."""

from __future__ import annotations

import pytest

from engine.decision import Decision, as_decision

CANONICAL = ["plain", "ngram>target@k4", "ngram>int4>target@k4", "suffix>draft>int4>target@k1", "draft>target@k8"]


@pytest.mark.parametrize("text", CANONICAL)
def test_parse_and_print_round_trip(text):
    decision = Decision.parse(text)
    assert str(decision) == decision.label == text
    assert Decision.parse(str(decision)) == decision


def test_the_chain_reads_cheapest_first_and_k_may_omit_its_k():
    assert Decision.parse("ngram>int4>target@4") == Decision(("ngram", "int4", "target"), 4)
    assert Decision.parse(" ngram > target @ k2 ") == Decision(("ngram", "target"), 2)
    assert Decision.parse("plain") == Decision() and Decision.parse("target@0").label == "plain"


@pytest.mark.parametrize("text, message", [
    ("ngram>target", "must be 'plain' or levels cheapest first"),
    ("ngram>target@x", "must be 'plain' or levels cheapest first"),
    ("@4", "must be 'plain' or levels cheapest first"),
    ("target>ngram@4", "must end at 'target'"),
    ("ngram>ngram>target@2", "each level once"),
    ("ngram>target@-1", "must be 'plain' or levels cheapest first"),
])
def test_a_bad_decision_names_the_expected_form(text, message):
    with pytest.raises(ValueError, match=message) as error:
        Decision.parse(text)
    assert repr(text) in str(error.value)


def test_the_old_comma_chain_is_read_with_a_warning():
    with pytest.warns(FutureWarning, match="deprecated; write 'ngram>target'"):
        assert Decision.parse("ngram,target@k4") == Decision(("ngram", "target"), 4)
    with pytest.warns(FutureWarning):
        assert Decision("draft,target", 2) == Decision(("draft", "target"), 2)


def test_the_chain_label_names_the_levels_that_run():
    assert Decision.parse("ngram>int4>target@3").chain_label == "ngram>int4>target"
    assert Decision(("ngram", "target"), 0).chain_label == "target" == Decision().chain_label


def test_configs_list_actions_as_decisions_spellings_or_pairs():
    decision = Decision(("ngram", "target"), 4)
    assert as_decision(decision) is decision
    assert as_decision("ngram>target@4") == as_decision((("ngram", "target"), 4)) == decision
    with pytest.raises(ValueError, match="must be a Decision"):
        as_decision(4)
