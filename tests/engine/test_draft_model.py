"""The trained-draft container: shared tensors, reduced vocabulary, save/load, lossless chains."""

from __future__ import annotations

import pytest
import torch

from engine import Decision, Engine, EngineConfig, SamplingParams, StaticRouter
from engine.draft_checkpoint import (DraftManifest, DraftMismatchError, architecture_of, load_draft, save_draft,
                                     trainable_state)
from engine.draft_model import build_draft
from engine.models import LoadedModel, ModelLoadError
from engine.runner import ModelRunner
from tests.tiny_models import build_tiny_llama

SUBSET = torch.tensor(sorted({0, 1, 2} | set(range(3, 45, 2)) | {4, 6, 8, 10, 12}))


@pytest.fixture(scope="module")
def loaded_target(tokenizer) -> LoadedModel:
    """A tiny target of its own (building a draft freezes the target's shared tensors)."""
    return LoadedModel("tiny", build_tiny_llama(seed=3, num_layers=3, init_std=0.3), tokenizer, "a" * 64)


def make_draft(target: LoadedModel, subset=SUBSET, layers=(0, 2), noise: float = 0.05):
    """A draft from target layers, nudged so that it is not a copy of anything."""
    draft = build_draft(target.model, list(layers), subset)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in draft.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * noise)
    return draft


def manifest_for(target: LoadedModel, layers=(0, 2), dtype="float32") -> DraftManifest:
    return DraftManifest(target_name=target.name, target_sha256=target.sha256,
                         architecture=architecture_of(target.model.config, len(layers)),
                         init_layers=list(layers), storage_dtype=dtype)


def test_draft_shares_embedding_and_head_with_target(loaded_target):
    draft = make_draft(loaded_target)
    assert draft.model.embed_tokens.weight is loaded_target.model.model.embed_tokens.weight
    assert draft.lm_head.weight is loaded_target.model.lm_head.weight
    assert len(draft.model.layers) == 2 and draft.config.num_hidden_layers == 2
    own = [p for p in draft.parameters() if p.requires_grad]
    assert own and all(p is not draft.lm_head.weight and p is not draft.model.embed_tokens.weight for p in own)


def test_reduced_vocabulary_logits_are_full_width_and_minus_inf_outside(loaded_target):
    draft = make_draft(loaded_target)
    ids = torch.tensor([[5, 9, 13, 20, 31]])
    with torch.no_grad():
        logits = draft(input_ids=ids).logits                                    # [1, 5, vocab]
    assert logits.shape[-1] == loaded_target.model.config.vocab_size
    outside = torch.ones(logits.shape[-1], dtype=torch.bool)
    outside[SUBSET] = False
    assert torch.isneginf(logits[..., outside]).all() and torch.isfinite(logits[..., SUBSET]).all()
    runner = ModelRunner(draft, 64)
    slot = runner.cache.allocate_slot()
    ours = runner.forward([slot], [ids[0].tolist()], [5])
    assert torch.equal(torch.isneginf(ours), torch.isneginf(logits))
    torch.testing.assert_close(ours[..., SUBSET], logits[..., SUBSET], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("subset", [SUBSET, None], ids=["reduced-vocab", "full-vocab"])
def test_save_load_round_trip_gives_the_same_logits(loaded_target, tmp_path, subset):
    draft = make_draft(loaded_target, subset)
    save_draft(draft, tmp_path, manifest_for(loaded_target))
    loaded = load_draft(tmp_path, loaded_target)
    assert loaded.model.embed_tokens.weight is loaded_target.model.model.embed_tokens.weight
    ids = torch.tensor([[1, 7, 3, 22, 40, 11]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, draft(input_ids=ids).logits)


def test_bfloat16_storage_loads_as_float32_rounded_weights(loaded_target, tmp_path):
    draft = make_draft(loaded_target)
    save_draft(draft, tmp_path, manifest_for(loaded_target, dtype="bfloat16"))
    loaded = load_draft(tmp_path, loaded_target)
    ours, theirs = loaded.model.layers[1].mlp.down_proj.weight, draft.model.layers[1].mlp.down_proj.weight
    assert ours.dtype == torch.float32
    assert torch.equal(ours, theirs.to(torch.bfloat16).float())
    fp32_bytes = sum(t.numel() * 4 for t in trainable_state(draft).values())
    assert (tmp_path / "draft.safetensors").stat().st_size < 0.6 * fp32_bytes


def test_loading_refuses_a_draft_made_for_another_target(loaded_target, tmp_path):
    save_draft(make_draft(loaded_target), tmp_path, manifest_for(loaded_target))
    other = LoadedModel("other", loaded_target.model, loaded_target.tokenizer, "b" * 64)
    with pytest.raises(DraftMismatchError, match="distilled for target 'tiny'"):
        load_draft(tmp_path, other)
    with pytest.raises(TypeError, match="LoadedModel"):
        load_draft(tmp_path, loaded_target.model)


def test_loading_refuses_missing_or_broken_checkpoints(loaded_target, tmp_path):
    with pytest.raises(ModelLoadError, match="no manifest.json"):
        load_draft(tmp_path, loaded_target)
    save_draft(make_draft(loaded_target), tmp_path, manifest_for(loaded_target))
    (tmp_path / "draft.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        load_draft(tmp_path, loaded_target)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not a valid draft manifest"):
        load_draft(tmp_path, loaded_target)


def test_build_draft_rejects_bad_layers_and_vocabularies(loaded_target):
    with pytest.raises(ValueError, match="init_layers"):
        build_draft(loaded_target.model, [5])
    with pytest.raises(ValueError, match="vocab_subset"):
        build_draft(loaded_target.model, [0], torch.tensor([1, 1, 2]))
    with pytest.raises(ValueError, match="vocab_subset"):
        build_draft(loaded_target.model, [0], torch.tensor([0, 45]))


@pytest.mark.parametrize("subset", [SUBSET, None], ids=["reduced-vocab", "full-vocab"])
def test_greedy_output_equals_plain_decoding_in_two_and_three_level_chains(loaded_target, subset):
    draft = make_draft(loaded_target, subset, noise=0.02)
    prompts = ["the cat sat on the mat. the cat", "1, 2, 3, 1, 2, 3, 1, 2", "hello world, hello"]
    params = SamplingParams(max_tokens=40, ignore_eos=True)

    def run(chain, k):
        engine = Engine(loaded_target.model, loaded_target.tokenizer, EngineConfig(max_model_len=128),
                        drafts={"draft": draft}, router=StaticRouter(Decision(chain, k)))
        outputs = engine.generate(prompts, params)
        return [o.output_token_ids for o in outputs], outputs

    plain, _ = run(("target",), 0)
    accepted = 0
    for chain, k in [(("draft", "target"), 2), (("draft", "target"), 5), (("ngram", "draft", "target"), 4)]:
        tokens, outputs = run(chain, k)
        assert tokens == plain, f"{chain} at K={k} changed the greedy output"
        accepted += sum(o.stats.num_accepted_tokens for o in outputs)
    assert accepted > 0, "the draft never got a token accepted: the chains were not exercised"
