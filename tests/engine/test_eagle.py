"""The EAGLE level is lossless and its caches stay exact, whatever chains the rows run and switch between.

The head is built in code on the tiny target: its layer starts as the target's first layer and
its `feature_fc` passes the token embedding plus a small share of the target's (normed) feature,
so it agrees with the target often enough (drafts are accepted and rejected) and a wrong feature
would show.
"""

from __future__ import annotations

import random

import pytest
import torch

from engine import Decision, SamplingParams
from engine.build import DraftSpec, load_drafts
from engine.draft_checkpoint import DraftManifest, DraftMismatchError, architecture_of, load_draft, save_draft
from engine.eagle_head import build_eagle_head, predict_features
from engine.models import LoadedModel
from engine.runner import ModelRunner
from tests.tiny_models import build_tiny_llama
from tests.engine.builders import (
    assert_same_outputs,
    make_dummy_engine,
    make_prompts,
    plain_decode,
    run_engine,
    single_thread,  # noqa: F401
    truncated_in_draft,
    with_catch_up,
    with_eos,
)
from tests.engine.test_sampling_lossless import (
    VOCAB,
    chi_square_p,
    exact_joint,
    sampled_counts,
)

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = make_prompts(12, seed=3)
GREEDY = SamplingParams(max_tokens=20)
EAGLE_CHAINS = [("eagle", "target"), ("ngram", "eagle", "target"), ("suffix", "eagle", "target"),
                ("eagle", "small", "target"), ("target",), ("ngram", "target")]
TOLERANCE = 1e-4


def make_eagle(target, feature_share: float = 0.05):
    """An EAGLE head on `target` that sees embedding + feature_share * feature."""
    head = build_eagle_head(target, init_layer=0)
    hidden = target.config.hidden_size
    with torch.no_grad():
        head.model.feature_fc.weight[:, :hidden] = torch.eye(hidden)
        head.model.feature_fc.weight[:, hidden:] = feature_share * torch.eye(hidden)
    return head


@pytest.fixture(scope="module")
def eagle_drafts(target, drafts):
    return {"eagle": make_eagle(target), "small": drafts["small"]}


class ScheduleRouter:
    """Row i at step s runs CHAINS[(i + s) % len] with K from 1..5: rows on different chains in one
    batch, every row switching chain (plain and n-gram steps between EAGLE steps) mid-request."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.step = 0

    def decide(self, view) -> list[Decision]:
        self.step += 1
        return [Decision(EAGLE_CHAINS[(row + self.step) % len(EAGLE_CHAINS)], self.rng.randint(1, 5))
                for row in range(len(view.rows))]


@pytest.mark.parametrize("chain", EAGLE_CHAINS[:4], ids=">".join)
def test_eagle_chains_decode_exactly_as_plain(chain, target, tokenizer, eagle_drafts):
    want = plain_decode(target, tokenizer, PROMPTS, GREEDY)
    outputs = make_dummy_engine(target, tokenizer, eagle_drafts, chain, 4).generate(PROMPTS, GREEDY)
    assert_same_outputs(outputs, want, ">".join(chain))
    accepted = sum(o.stats.num_accepted_tokens for o in outputs)
    assert 0 < accepted < sum(o.stats.num_draft_tokens for o in outputs), "no accepted or no rejected drafts"


class FreshEagle:
    """The target's features and the head's next-token logits from brand-new prefills."""

    def __init__(self, target, head):
        self.target, self.head = ModelRunner(target, 256), ModelRunner(head, 256)
        self.slots = self.target.cache.allocate_slot(), self.head.cache.allocate_slot()

    def features(self, tokens: list[int]) -> torch.Tensor:
        """f_0..f_{n-1} of tokens x_0..x_{n-1}: [n, hidden]."""
        self.target.cache.rollback(self.slots[0], 0)
        return self.target.forward([self.slots[0]], [tokens], [1], return_hidden=True)[1][0]

    def logits(self, tokens: list[int], features: torch.Tensor) -> torch.Tensor:
        """The head's logits after the pairs (f_p, x_{p+1}) of tokens x_1..x_n and features f_0..f_{n-1}."""
        self.head.cache.rollback(self.slots[1], 0)
        return self.head.forward([self.slots[1]], [tokens], [1], features=features[None])[0, 0]


def assert_eagle_caches_exact(engine, fresh: FreshEagle) -> int:
    """Each running row's EAGLE slot holds committed pairs fed with the target's true features,
    and the target keeps the features of its committed positions. Returns rows checked."""
    level, num_checked = engine.levels["eagle"], 0
    target_cache = engine.levels["target"].cache
    for request in engine.scheduler.running:
        slot, committed = request.level_slots.get("eagle"), request.all_token_ids
        if slot is None:
            continue
        length = level.cache.lengths[slot]
        assert length == len(level.cached_tokens[slot]) == level.num_real.get(slot, 0) <= len(committed) - 2
        assert level.cached_tokens[slot] == committed[1: length + 1]
        features = fresh.features(committed[:-1])                                      # [n - 1, hidden]
        target_slot = request.level_slots["target"]
        held = target_cache.lengths[target_slot]
        assert (target_cache.features[target_slot, :held] - features[:held]).abs().max() < TOLERANCE
        want = fresh.logits(committed[1: length + 2], features[: length + 1])
        got = level.runner.forward([slot], [[committed[length + 1]]], [1], features=features[length][None, None])[0, 0]
        level.cache.rollback(slot, length)
        assert (got - want).abs().max() < TOLERANCE, f"{request.request_id}: eagle logits at {length}"
        num_checked += 1
    return num_checked


def test_switching_chains_every_step_keeps_output_and_caches_exact(target, tokenizer, eagle_drafts):
    """Rows on different chains, switching every step (plain and n-gram steps between EAGLE
    steps), joining while others decode, some caught up in budget-sized slices."""
    engine = with_catch_up(make_dummy_engine(target, tokenizer, eagle_drafts, router=ScheduleRouter(0), max_num_seqs=5),
                           4, 24)
    fresh = FreshEagle(target, eagle_drafts["eagle"])
    ids, final, pending, num_checked = [], {}, list(PROMPTS), 0
    while engine.has_unfinished or pending:
        if pending:
            ids.append(engine.add_request(pending.pop(0), GREEDY))
        final.update({o.request_id: o for o in engine.step() if o.finished})
        num_checked += assert_eagle_caches_exact(engine, fresh)
    assert_same_outputs([final[i] for i in ids], plain_decode(target, tokenizer, PROMPTS, GREEDY), "switching")
    assert num_checked > 40
    assert all(level.cache.num_free_slots == level.cache.num_slots for level in engine.levels.values())


def test_stop_conditions_inside_an_eagle_draft(target, tokenizer, eagle_drafts):
    eos_target = with_eos(target, tokenizer.convert_tokens_to_ids("o"))
    params = [SamplingParams(max_tokens=3 + i % 9 if i % 2 else 20, stop=["j\n", "2o", "jjj"]) for i in range(30)]
    prompts = make_prompts(30, seed=0)
    want = run_engine(make_dummy_engine(eos_target, tokenizer), prompts, params)
    drafts = {"eagle": make_eagle(eos_target), "small": eagle_drafts["small"]}
    counter: dict = {}
    got = run_engine(make_dummy_engine(eos_target, tokenizer, drafts, ("eagle", "target"), 8), prompts, params,
                     on_step=truncated_in_draft(counter))
    assert_same_outputs(got, want, "stops")
    assert counter.get("n", 0) > 0, "no stop condition fell inside a draft"


@pytest.mark.parametrize("chain", [("eagle", "target"), ("ngram", "eagle", "target")], ids=">".join)
def test_sampling_through_eagle_follows_the_target_distribution(chain):
    toy = build_tiny_llama(vocab_size=VOCAB, hidden_size=32, seed=11, init_std=0.3)
    params = SamplingParams(temperature=1.0)
    counts = sampled_counts(toy, {"eagle": make_eagle(toy, 0.1)}, chain, params)
    p_value = chi_square_p(counts, exact_joint(toy, params))
    assert p_value > 1e-3, f"{'>'.join(chain)}: chi-square p = {p_value:.2e}"


def test_predict_features_matches_the_engine_runner(target):
    """Training's transformers forward is the same function as the engine's runner forward."""
    head, ids = make_eagle(target, 0.5), torch.tensor([[5, 9, 12, 7, 30]])
    features = torch.randn(1, 5, target.config.hidden_size)
    with torch.no_grad():
        predicted, logits = predict_features(head, ids, features)
    runner = ModelRunner(head, 64)
    got, hidden = runner.forward([runner.cache.allocate_slot()], [ids[0].tolist()], [5], features=features,
                                 return_hidden=True)
    assert (hidden - predicted).abs().max() < TOLERANCE and (got - logits).abs().max() < TOLERANCE


def test_checkpoint_round_trip_and_mismatch_errors(target, tokenizer, tmp_path):
    loaded = LoadedModel("tiny", target, tokenizer, "a" * 64)
    head = build_eagle_head(target, 1, torch.arange(0, 40))
    with torch.no_grad():
        head.model.feature_fc.weight.normal_()
    manifest = DraftManifest(target_name="tiny", target_sha256="a" * 64, kind="eagle", init_layers=[1],
                             architecture=architecture_of(target.config, 1), storage_dtype="float32")
    save_draft(head, tmp_path, manifest)
    again = load_draft(tmp_path, loaded, kind=None)
    assert torch.equal(again.model.feature_fc.weight, head.model.feature_fc.weight)
    assert again.model.embed_tokens.weight is target.model.embed_tokens.weight      # shared, not stored
    assert again.model.norm is target.model.norm and torch.equal(again.lm_head.vocab_subset, torch.arange(0, 40))
    with pytest.raises(DraftMismatchError, match="distilled for target 'tiny'"):
        load_draft(tmp_path, LoadedModel("other", target, tokenizer, "b" * 64), "eagle")
    with pytest.raises(DraftMismatchError, match="holds a 'eagle' checkpoint, not a 'draft' one"):
        load_draft(tmp_path, loaded)

    def optional_eagle(path):           # what the server asks for: a default head it can run without
        return [DraftSpec("eagle", path, kind="eagle", if_absent="skip", if_unusable="skip")]

    models, notes = load_drafts(optional_eagle(tmp_path), LoadedModel("other", target, tokenizer, "b" * 64))
    assert not models and "not used" in notes["eagle"]      # a default head made for another model is skipped
    models, notes = load_drafts(optional_eagle(tmp_path / "missing"), loaded)
    assert not models and "no EAGLE head at" in notes["eagle"]
    assert "eagle" in load_drafts(optional_eagle(tmp_path), loaded)[0]
    bigger = build_tiny_llama(hidden_size=96, num_layers=2)
    with pytest.raises(DraftMismatchError, match="architecture"):
        load_draft(tmp_path, LoadedModel("tiny", bigger, tokenizer, "a" * 64), "eagle")


def test_an_eagle_level_needs_an_eagle_head_and_target_features(target, drafts):
    from engine.eagle_level import EagleLevel
    from engine.levels import ModelLevel

    plain_target = ModelLevel("target", ModelRunner(target, 64))
    with pytest.raises(ValueError, match="keep its features"):
        EagleLevel("eagle", ModelRunner(make_eagle(target), 64), plain_target)
    with pytest.raises(ValueError, match="needs an EAGLE head"):
        EagleLevel("eagle", ModelRunner(drafts["small"], 64), ModelLevel("t", ModelRunner(target, 64, keep_features=True)))


def test_the_profiler_times_an_eagle_level(target, tokenizer, eagle_drafts):
    """The server measures levels its profile lacks at start-up: an EAGLE level must be measurable."""
    from engine.profile import measure_profile

    engine = make_dummy_engine(target, tokenizer, eagle_drafts, ("eagle", "target"), 3)
    profile = measure_profile(engine, levels=["target", "eagle"], batches=(1, 2), tokens=(1, 4), contexts=(16,),
                              budget_s=2, model="tiny")
    assert {"target", "eagle"} <= set(profile.levels)
