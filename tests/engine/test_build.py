"""`Engine.from_pretrained`: one description (model, DraftSpecs, EngineConfig) builds the engine every
command runs; its output is plain decoding's, and an absent or unusable checkpoint is handled as
the spec says, with the message a user can act on."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import Decision, Engine, EngineConfig, SamplingParams, StaticRouter
from engine.build import DraftSpec, MissingDraftError
from engine.draft_checkpoint import DraftManifest, DraftMismatchError, architecture_of, save_draft
from engine.draft_model import build_draft
from engine.eagle_head import build_eagle_head
from engine.models import load_model
from tests.engine.builders import make_prompts, single_thread  # noqa: F401
from tests.tiny_models import build_char_tokenizer, build_tiny_llama

PARAMS = SamplingParams(max_tokens=24, ignore_eos=True)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    """A tiny target saved as a local HF directory, a draft distilled for it (`draft`), an EAGLE
    head made for another target (`foreign-eagle`) and an empty directory (`empty`)."""
    root = tmp_path_factory.mktemp("pretrained")
    build_tiny_llama(seed=0, num_layers=2).save_pretrained(root / "tiny")
    build_char_tokenizer().save_pretrained(root / "tiny")
    target = load_model(str(root / "tiny"))
    config = target.model.config
    save_draft(build_draft(target.model, [0]), root / "draft",
               DraftManifest(target.name, target.sha256, architecture_of(config, 1), [0], storage_dtype="float32"))
    save_draft(build_eagle_head(target.model), root / "foreign-eagle",
               DraftManifest("other", "b" * 64, architecture_of(config, 1), [1], storage_dtype="float32", kind="eagle"))
    (root / "empty").mkdir()
    return root


def generate(engine: Engine, chain: tuple[str, ...], k: int) -> list[list[int]]:
    engine.set_router(StaticRouter(Decision(chain, k)))
    return [o.output_token_ids for o in engine.generate(make_prompts(6), PARAMS)]


def test_a_draft_and_an_int4_level_give_plain_decodings_output(checkpoints, single_thread):  # noqa: F811
    engine = Engine.from_pretrained(str(checkpoints / "tiny"), drafts=[DraftSpec("draft", checkpoints / "draft")],
                                    config=EngineConfig(max_model_len=128, quantized_levels="int4"))
    assert set(engine.levels) == {"target", "int4", "draft"}
    assert engine.model_name == "tiny" and engine.draft_notes == {"draft": f"loaded {checkpoints / 'draft'}"}
    plain = generate(Engine.from_pretrained(str(checkpoints / "tiny"), config=EngineConfig(max_model_len=128)),
                     ("target",), 0)
    assert generate(engine, ("draft", "int4", "target"), 3) == plain
    assert generate(engine, ("ngram", "draft", "int4", "target"), 4) == plain


def test_a_missing_required_draft_says_how_to_train_one_before_the_target_loads(checkpoints, tmp_path):
    missing = [DraftSpec("draft", checkpoints / "empty")]
    message = r"no trained draft at .*empty \(no manifest.json\); train one with `python -m distill.draft`"
    with pytest.raises(MissingDraftError, match=message):       # the target path does not even exist
        Engine.from_pretrained(str(tmp_path / "no-such-model"), drafts=missing)
    with pytest.raises(MissingDraftError, match=r"draft 'd': path .*nowhere does not exist"):
        Engine.from_pretrained(str(tmp_path / "no-such-model"), drafts=[DraftSpec("d", tmp_path / "nowhere", kind=None)])


def test_an_optional_draft_that_is_absent_or_made_for_another_model_is_skipped_with_a_note(checkpoints):
    optional = [DraftSpec("draft", checkpoints / "empty", if_absent="skip"),
                DraftSpec("eagle", checkpoints / "foreign-eagle", kind="eagle", if_absent="skip", if_unusable="skip")]
    engine = Engine.from_pretrained(str(checkpoints / "tiny"), drafts=optional, config=EngineConfig(max_model_len=128))
    assert set(engine.levels) == {"target"}
    assert engine.draft_notes["draft"].startswith("no trained draft at")
    assert "EAGLE head" in engine.draft_notes["eagle"] and "not used" in engine.draft_notes["eagle"]
    with pytest.raises(DraftMismatchError, match="distilled for target 'other'"):      # unless the spec needs it
        Engine.from_pretrained(str(checkpoints / "tiny"), drafts=[DraftSpec("eagle", checkpoints / "foreign-eagle",
                                                                            kind="eagle")])


def test_a_spec_checks_itself():
    with pytest.raises(ValueError, match="kind"):
        DraftSpec("d", "x", kind="medusa")
    with pytest.raises(ValueError, match="if_absent"):
        DraftSpec("d", "x", if_absent="warn")
    with pytest.raises(ValueError, match="repeat"):
        Engine.from_pretrained("default", drafts=[DraftSpec("d", "x", if_absent="skip")] * 2)
