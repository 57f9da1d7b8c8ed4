"""Speculative sampling is lossless: the first generated tokens follow the target's own law.

On a 12-token vocabulary the exact joint distribution of the first 3 tokens is computed by
enumerating all 12^3 continuations with transformers; 20k engine samples (each request with its
own seed, 2500 rows per engine batch) are compared with a chi-square test. A sampler that skips
the residual distribution must fail the same test.
"""

from __future__ import annotations

import copy
import gc

import pytest
import torch
from scipy.stats import chisquare

import engine.spec_step
from engine import SamplingParams
from engine.sampling import sample_from
from tests.tiny_models import build_tiny_llama, noisy_copy
from engine.verify import verify_sampling
from tests.engine.builders import make_dummy_engine, single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB = 12
PROMPT = [3, 5, 7, 3, 5, 9]            # repeats, so that the n-gram drafter proposes
NUM_TOKENS = 3
NUM_SAMPLES = 20_000
BATCH = 2500
MIN_EXPECTED = 5                        # cells expected rarer than this are pooled into one


@pytest.fixture(scope="module")
def toy():
    target = build_tiny_llama(vocab_size=VOCAB, hidden_size=32, seed=11, init_std=0.3)
    return target, {"draft": noisy_copy(target, 0.6, seed=2), "draft2": noisy_copy(target, 1.0, seed=3)}


def transform(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus: the smallest set whose mass reaches
    top_p), written independently of the engine's version."""
    probs = (logits.double() / params.temperature).softmax(-1)
    out = torch.zeros_like(probs)
    for row in range(probs.shape[0]):
        order = probs[row].argsort(descending=True)
        keep = order[: params.top_k] if params.top_k else order
        kept = probs[row, keep] / probs[row, keep].sum()
        reach = int((kept.cumsum(0) < params.top_p - 1e-12).sum()) + 1
        out[row, keep[:reach]] = kept[:reach] / kept[:reach].sum()
    return out


def exact_joint(model, params: SamplingParams) -> torch.Tensor:
    """P(first three tokens) for every one of the 12^3 sequences: [12, 12, 12]."""
    with torch.no_grad():
        prefixes = torch.tensor(PROMPT)[None, :]
        first = transform(model(prefixes).logits[:, -1], params)                                # [1, 12]
        ones = torch.cat([prefixes.expand(VOCAB, -1), torch.arange(VOCAB)[:, None]], 1)
        second = transform(model(ones).logits[:, -1], params)                                   # [12, 12]
        pairs = torch.cartesian_prod(torch.arange(VOCAB), torch.arange(VOCAB))
        third = transform(model(torch.cat([prefixes.expand(len(pairs), -1), pairs], 1)).logits[:, -1], params)
    return first[0][:, None, None] * second[:, :, None] * third.view(VOCAB, VOCAB, VOCAB)


@pytest.fixture(scope="module")
def toy_bf16(toy):
    """The same toy models in bfloat16 (the engine's opt-in fast path)."""
    target, drafts = toy
    return (copy.deepcopy(target).to(torch.bfloat16),
            {name: copy.deepcopy(d).to(torch.bfloat16) for name, d in drafts.items()})


def sampled_counts(model, drafts, chain, params: SamplingParams, dtype: str = "float32",
                   p_min: float = 0.0, engines: list | None = None) -> torch.Tensor:
    """Counts of the first three tokens over NUM_SAMPLES seeded requests: [12^3] (the engine
    that drew them is appended to `engines` when given)."""
    engine = make_dummy_engine(model, None, drafts, chain, 3, max_model_len=16, max_num_seqs=BATCH,
                               max_num_tokens=BATCH * 16, dtype=dtype, p_min=p_min,
                               quantized_levels="int4" if "int4" in chain else "")
    if engines is not None:
        engines.append(engine)
    counts = torch.zeros(VOCAB ** NUM_TOKENS, dtype=torch.long)
    gc.disable()        # tens of thousands of short-lived requests: skip the collector's sweeps
    try:
        for start in range(0, NUM_SAMPLES, BATCH):
            counts += sampled_batch(engine, params, start)
    finally:
        gc.enable()
    return counts


def sampled_batch(engine, params: SamplingParams, seed: int) -> torch.Tensor:
    """One engine batch of BATCH requests seeded seed, seed + 1, ...: counts [12^3]."""
    batch = [SamplingParams(max_tokens=NUM_TOKENS, temperature=params.temperature, top_k=params.top_k,
                            top_p=params.top_p, ignore_eos=True, seed=seed + i) for i in range(BATCH)]
    ids = [engine.add_request(PROMPT, p) for p in batch]
    finished = {}
    while engine.has_unfinished:
        finished.update({o.request_id: o.output_token_ids for o in engine.step() if o.finished})
    tokens = torch.tensor([finished[i][:NUM_TOKENS] for i in ids])                             # [BATCH, 3]
    assert engine.levels["target"].cache.num_free_slots == engine.levels["target"].cache.num_slots
    return torch.bincount(tokens[:, 0] * VOCAB ** 2 + tokens[:, 1] * VOCAB + tokens[:, 2],
                          minlength=VOCAB ** NUM_TOKENS)


def chi_square_p(counts: torch.Tensor, joint: torch.Tensor) -> float:
    expected = joint.flatten() * counts.sum()
    common = expected >= MIN_EXPECTED
    observed = torch.cat([counts[common].double(), counts[~common].sum()[None].double()])
    wanted = torch.cat([expected[common], expected[~common].sum()[None]])
    if wanted[-1] == 0:
        assert observed[-1] == 0, "sampled a sequence the target gives probability 0"
        observed, wanted = observed[:-1], wanted[:-1]
    return float(chisquare(observed.numpy(), wanted.numpy() * observed.sum().item() / wanted.sum().item()).pvalue)


CASES = [
    (("draft", "target"), SamplingParams(temperature=1.0)),
    (("ngram", "target"), SamplingParams(temperature=1.0)),
    (("draft2", "draft", "target"), SamplingParams(temperature=1.0)),
    (("draft2", "draft", "target"), SamplingParams(temperature=0.8, top_k=6, top_p=0.9)),
    # four levels, each verifying the one below; int4 is the target's own quantized copy
    (("ngram", "draft2", "draft", "target"), SamplingParams(temperature=1.0)),
    (("draft2", "draft", "int4", "target"), SamplingParams(temperature=0.8, top_k=6, top_p=0.9)),
]


@pytest.mark.parametrize("chain,params", CASES, ids=[f"{'>'.join(c)}-t{p.temperature}-k{p.top_k}-p{p.top_p}"
                                                      for c, p in CASES])
def test_first_tokens_follow_the_target_distribution(chain, params, toy):
    target, drafts = toy
    counts = sampled_counts(target, drafts, chain, params)
    p_value = chi_square_p(counts, exact_joint(target, params))
    assert p_value > 1e-3, f"{'>'.join(chain)}: chi-square p = {p_value:.2e}"


@pytest.mark.parametrize("chain,p_min,params", [
    (("draft", "target"), 0.5, SamplingParams(temperature=1.0)),
], ids=["draft>target-p0.5"])
def test_a_draft_stopped_by_a_threshold_keeps_the_target_distribution(chain, p_min, params, toy):
    """The stop reads only the draft's own distribution, so rejection sampling stays exact."""
    target, drafts = toy
    engines: list = []
    p_value = chi_square_p(sampled_counts(target, drafts, chain, params, p_min=p_min, engines=engines),
                           exact_joint(target, params))
    assert p_value > 1e-3, f"{'>'.join(chain)} p_min {p_min}: chi-square p = {p_value:.2e}"
    drafted = engines[0].trackers.snapshot()["pairs"][f"{chain[0]}>{chain[1]}"]["confidence"]["drafted"]
    assert sum(drafted[: int(p_min * 10)]) > 0, "the threshold never stopped a draft"
    assert sum(drafted[int(p_min * 10):]) > 0, "the threshold stopped every draft at once"


def resample_from_p(target_probs, proposals, num_proposed, draft_probs, uniforms):
    """Broken on purpose: after a rejection draws from p instead of norm(max(0, p - q))."""
    output, num_accepted = verify_sampling(target_probs, proposals, num_proposed, draft_probs, uniforms)
    rows = torch.arange(len(num_accepted))
    redrawn = sample_from(target_probs[rows, num_accepted], uniforms[rows, num_proposed])
    output[rows, num_accepted] = torch.where(num_accepted < num_proposed, redrawn, output[rows, num_accepted])
    return output, num_accepted


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_sampler_without_the_residual_fails(dtype, toy, toy_bf16, monkeypatch):
    target, drafts = toy if dtype == "float32" else toy_bf16
    monkeypatch.setattr(engine.spec_step, "verify_sampling", resample_from_p)
    params = SamplingParams(temperature=1.0)
    counts = sampled_counts(target, drafts, ("draft", "target"), params, dtype)
    p_value = chi_square_p(counts, exact_joint(target, params))
    assert p_value < 1e-3, f"the broken sampler passed in {dtype}: p = {p_value:.2e}"


@pytest.mark.parametrize("chain", [("draft", "target"), ("draft2", "draft", "target")], ids=">".join)
def test_first_tokens_follow_the_target_distribution_in_bfloat16(chain, toy_bf16):
    """The bf16 engine samples the bf16 target's law (transformers in bf16 gives the exact joint)."""
    target, drafts = toy_bf16
    params = SamplingParams(temperature=1.0)
    p_value = chi_square_p(sampled_counts(target, drafts, chain, params, "bfloat16"), exact_joint(target, params))
    assert p_value > 1e-3, f"{'>'.join(chain)} in bfloat16: chi-square p = {p_value:.2e}"
