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


@pytest.mark.parametrize("text", ["int4>target@k8p0.5", "draft>int4>target@k4p0.8", "draft>target@k2p0.05"])
def test_a_stop_threshold_round_trips_and_labels_without_one_print_as_before(text):
    decision = Decision.parse(text)
    assert decision.p_min > 0 and str(decision) == text and Decision.parse(str(decision)) == decision
    assert Decision.parse("int4>target@8p0.5") == Decision(("int4", "target"), 8, 0.5)
    assert Decision(("int4", "target"), 8, 0.0).label == "int4>target@k8"       # p_min 0: today's spelling


@pytest.mark.parametrize("text, message", [
    ("int4>target@k8p1", "p_min must be a number in \\[0, 1\\)"),
    ("int4>target@k8p1.5", "p_min must be a number in \\[0, 1\\)"),
    ("int4>target@k8p-0.5", "must be 'plain' or levels cheapest first"),
    ("int4>target@k8p", "must be 'plain' or levels cheapest first"),
    ("ngram>target@k8p0.5", "needs a model first level; 'ngram' is model-free"),
    ("ngram>int4>target@k4p0.5", "needs a model first level; 'ngram' is model-free"),
    ("target@k0p0.5", "needs a draft"),
])
def test_a_bad_stop_threshold_says_why(text, message):
    with pytest.raises(ValueError, match=message):
        Decision.parse(text)


def test_a_threshold_is_rejected_in_code_too():
    with pytest.raises(ValueError, match="p_min must be a number"):
        Decision(("int4", "target"), 8, 1.0)
    with pytest.raises(ValueError, match="p_min must be a number"):
        Decision(("int4", "target"), 8, True)
