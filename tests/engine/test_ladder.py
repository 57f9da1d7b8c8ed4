"""The ladder's chains: every level verifies the one below, quantized copies sit above drafts."""

from __future__ import annotations

from engine import Decision, Engine, EngineConfig
from engine.ladder import ladder_chains


def test_a_draft_and_an_int4_copy_give_four_level_chains():
    assert ladder_chains(["target", "draft", "int4"]) == [
        ("ngram", "target"), ("suffix", "target"),
        ("draft", "target"), ("ngram", "draft", "target"),
        ("int4", "target"), ("ngram", "int4", "target"),
        ("draft", "int4", "target"), ("ngram", "draft", "int4", "target"),
    ]                                   # a cheaper level never verifies a dearer one: no int4 > draft


def test_without_model_levels_only_the_model_free_chains_remain():
    assert ladder_chains([]) == ladder_chains(["target"]) == [("ngram", "target"), ("suffix", "target")]


def test_each_draft_goes_through_each_quantized_copy_and_copies_never_stack():
    assert ladder_chains(["target", "draft", "int8", "int4"]) == [
        ("ngram", "target"), ("suffix", "target"),
        ("draft", "target"), ("ngram", "draft", "target"),
        ("int8", "target"), ("ngram", "int8", "target"),
        ("int4", "target"), ("ngram", "int4", "target"),
        ("draft", "int8", "target"), ("ngram", "draft", "int8", "target"),
        ("draft", "int4", "target"), ("ngram", "draft", "int4", "target"),
    ]


def test_every_ladder_chain_runs_on_an_engine_with_those_levels(target, tokenizer, drafts):
    engine = Engine(target, tokenizer, EngineConfig(max_model_len=64, quantized_levels="int4"),
                    drafts={"draft": drafts["draft"]})
    for chain in ladder_chains(list(engine.levels)):
        engine.validate_decision(Decision(chain, 2))


def test_quantized_levels_reject_unknown_or_repeated_formats():
    import pytest

    with pytest.raises(ValueError, match="quantized_levels may list int8, int4, got 'int3'"):
        EngineConfig(quantized_levels="int3")
    with pytest.raises(ValueError, match="twice"):
        EngineConfig(quantized_levels="int4,int4")
