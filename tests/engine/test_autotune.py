"""The forward-path self-test: what it claims invariant is invariant, a drifting path is refused,
its choice is cached by what decides it, and every path runs with every level."""

from __future__ import annotations

import pytest
import torch

from engine import Decision, SamplingParams
from engine import autotune
from engine.autotune import choose_path, decide, measure, resolve_engine_precision, run_selftest
from engine.linear_kernels import prepacked_available
from engine.runner import ModelRunner
from tests.tiny_models import build_tiny_llama, noisy_copy
from tests.engine.builders import make_dummy_engine, single_thread  # noqa: F401
from tests.engine.test_eagle import make_eagle

pytestmark = pytest.mark.usefixtures("single_thread")
FAST = dict(context=48, repeats=1, steps=19)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECROUTE_CACHE", str(tmp_path))
    monkeypatch.delenv("SPECROUTE_AUTO_PATH", raising=False)


@pytest.fixture(scope="module")
def model():
    return build_tiny_llama(seed=11, init_std=0.2)


def positions_logits(runner: ModelRunner, prompt: list[int], tokens: list[int], others: list[list[int]]):
    """Logits of each of `tokens` decoded one at a time alone, and verified in one forward beside
    rows feeding `others` (each fed after its own prompt)."""
    slots = [runner.cache.allocate_slot() for _ in range(1 + len(others))]
    runner.forward(slots[:1], [prompt], [1])
    decoded = [runner.forward(slots[:1], [[t]], [1])[0, 0] for t in tokens]
    runner.cache.rollback(slots[0], len(prompt))
    for slot, row in zip(slots[1:], others):
        runner.forward([slot], [row[:3]], [1])
    verified = runner.forward(slots, [tokens, *[row[3:] for row in others]],
                              [len(tokens), *[len(row) - 3 for row in others]])[0]
    return decoded, verified


def test_every_path_the_self_test_calls_invariant_gives_decode_and_verify_the_same_bits(model):
    choice = run_selftest(model, **FAST)
    claimed = [m for m in choice.measurements if m.invariant]
    assert claimed, choice.table()
    assert choice.invariant and choice.path in {m.path for m in claimed}
    prompt, tokens = [5, 9, 13, 5, 9, 22, 31], [7, 3, 3, 40, 12, 8, 8, 1, 2, 17, 6, 5, 4, 33, 21, 9]
    for m in claimed:                              # 16 drafted tokens, beside rows of other widths
        dtype, kernel = m.path.split("-")
        runner = measure._runner_for(model, dtype, kernel, 128)
        with torch.inference_mode():
            decoded, verified = positions_logits(runner, prompt, tokens, [[1, 2, 3, 4], list(range(3, 20))])
        for j, logits in enumerate(decoded):
            assert torch.equal(verified[j], logits), f"{m.path}: position {j}"


class DriftingRunner(ModelRunner):
    """A runner whose multi-token forwards differ in the last bit: what a non-invariant kernel does."""

    def forward(self, slots, tokens, num_logits, **kwargs):
        logits = super().forward(slots, tokens, num_logits, **kwargs)
        return logits * (1 + 2 ** -20) if max(len(t) for t in tokens) > 1 else logits


def test_a_path_that_drifts_is_refused_and_the_choice_says_so(model, monkeypatch):
    monkeypatch.setattr(measure, "ModelRunner", DriftingRunner)
    choice = run_selftest(model, candidates=(("float32", "prepacked"), ("float32", "dense")),
                          give_up_factor=float("inf"), **FAST)
    assert all(m.available and not m.invariant and m.logits_differ > 0 for m in choice.measurements)
    assert not choice.invariant and "not by invariance" in choice.reason
    assert choice.path.startswith("float32")


def test_the_fastest_invariant_path_wins_over_a_faster_drifting_one():
    fast = measure.PathMeasurement("float32-dense", ms={"b1_t1": 1.0}, positions=9, logits_differ=3)
    slow = measure.PathMeasurement("float32-prepacked", ms={"b1_t1": 2.0}, positions=9, logits_differ=0)
    slower = measure.PathMeasurement("bfloat16-dense", ms={"b1_t1": 3.0}, positions=9, logits_differ=0)
    best, reason = decide([fast, slower, slow])
    assert best is slow and "invariant" in reason


def test_the_choice_is_cached_and_measured_again_when_the_machine_key_changes(model, monkeypatch):
    first = choose_path(model, "float32", "auto", **FAST)
    assert not first.cached and autotune.cache_file(first.key).exists()
    calls = []
    monkeypatch.setattr(autotune, "measure_path", lambda *a, **k: calls.append(a) or measure.PathMeasurement("x"))
    again = choose_path(model, "float32", "auto", **FAST)
    assert again.cached and again.path == first.path and not calls
    monkeypatch.setattr(autotune, "cpu_identity", lambda: {"cpu": "another CPU", "cpu_flags_sha256": "0"})
    choose_path(model, "float32", "auto", **FAST)
    assert len(calls) == 2                         # both fp32 candidates measured on the "new" machine


def test_explicit_and_pinned_paths_skip_the_self_test(model, monkeypatch):
    monkeypatch.setattr(autotune, "choose_path", lambda *a, **k: pytest.fail("self-test ran"))
    precision, choice = resolve_engine_precision(model, "float32", "dense")
    assert precision.name == "float32-dense" and choice is None
    monkeypatch.setenv("SPECROUTE_AUTO_PATH", "bfloat16-dense")
    assert resolve_engine_precision(model)[0].name == "bfloat16-dense"
    assert resolve_engine_precision(model, "float32")[0].name == "float32-dense"
    monkeypatch.setenv("SPECROUTE_AUTO_PATH", "float32-prepacked")     # bf16 asked for: its own kernel
    expected = "bfloat16-prepacked" if prepacked_available(torch.bfloat16, torch.device("cpu")) else "bfloat16-dense"
    assert resolve_engine_precision(model, "bfloat16")[0].name == expected


PATHS = [(d, k) for d, k in autotune.CANDIDATES
         if not measure.path_unavailable_reason(build_tiny_llama(seed=3), d, k)]


@pytest.mark.parametrize("dtype,kernel", PATHS, ids=["-".join(p) for p in PATHS])
def test_every_path_runs_a_chain_through_every_level(dtype, kernel, tokenizer):
    """The draft, the EAGLE head and the int4 copy load on every path (an EAGLE head shares the
    target's cast embedding but must be cast itself), and chains through all of them stay exact."""
    target = build_tiny_llama(seed=3, init_std=0.2)
    drafts = {"draft": noisy_copy(target, 0.05, seed=4), "eagle": make_eagle(target)}
    engine = make_dummy_engine(target, tokenizer, drafts, dtype=dtype, kernel=kernel, quantized_levels="int4")
    assert set(engine.levels) == {"target", "int4", "draft", "eagle"}
    params = SamplingParams(max_tokens=16, ignore_eos=True)
    expected = engine.generate(["abc abc abc"], params)[0].output_token_ids
    for chain in (("ngram", "draft", "int4", "target"), ("eagle", "int4", "target"), ("eagle", "target")):
        engine.router.decision = Decision(chain, 3)
        assert engine.generate(["abc abc abc"], params)[0].output_token_ids == expected, chain


def test_an_engine_on_another_path_after_the_self_test_runs(tokenizer):
    """The self-test measures copies: an engine then built on bf16 dense over the same model does not
    meet the fp32 products the self-test made (every step failed with a dtype mismatch before)."""
    target = build_tiny_llama(seed=6, init_std=0.2)
    run_selftest(target, candidates=(("float32", "dense"), ("float32", "prepacked")), **FAST)
    engine = make_dummy_engine(target, tokenizer, dtype="bfloat16", kernel="dense")
    assert len(engine.generate(["abc abc"], SamplingParams(max_tokens=8, ignore_eos=True))[0].output_token_ids) == 8
