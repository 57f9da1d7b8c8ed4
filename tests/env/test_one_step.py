"""One step function: the real engine and the simulator run the same workload and agree, call by
call, on everything but the tokens and the clock.

The simulator's draws are replaced by the real engine's outcomes (how many tokens each level
proposed and accepted, what each shadow proposal would have had accepted), so any difference
left comes from the code they share or should share: admission, routing, K capping, commit and
stop conditions, shadow drafting, rollback bookkeeping, per-request stats and the trackers.
"""

from __future__ import annotations

import pytest

from engine import Decision, Engine, EngineConfig, SamplingParams
from engine.core import EngineCore
from engine.profile.latency_profile import LatencyProfile
from engine.scheduler import Scheduler
from engine.sequence import Request
from engine.shadow_drafts import PendingProposal, score_proposal
from engine.spec_step import PairOutcome, RowResult
from env.sim_executor import SIM_REJECTED_ID, SIM_TOKEN_ID, SimDrafter, SimExecutor
from tests.env.conftest import make_calibration, make_profile

CONFIG = dict(max_model_len=96, max_num_seqs=2, max_num_tokens=4096, shadow_draft_length=4)
PROMPTS = [("the cat sat on the mat. the cat sat", 20), ("one two one two one two", 9),
           ("abc abd abe abc abd", 14), ("hello world hello", 30), ("xyz zyx xyz", 5)]
SCHEDULE = [Decision(), Decision(("ngram", "target"), 3), Decision(("draft", "target"), 2),
            Decision(("ngram", "draft", "target"), 3), Decision(("suffix", "target"), 4),
            Decision(("small", "draft", "target"), 2), Decision(("suffix", "small", "target"), 5)]


def outcome(pair: PairOutcome) -> tuple:
    return pair.drafter, pair.verifier, pair.num_proposed, pair.num_accepted


class RecordingDrafter:
    """Wraps a real drafter: keeps every proposal by (request, drafter, position)."""

    def __init__(self, inner, proposals: dict):
        self.inner, self.name, self.proposals = inner, inner.name, proposals

    def propose(self, request_id, context, k):
        tokens = self.inner.propose(request_id, context, k)
        self.proposals[(request_id, self.name, len(context))] = tokens
        return tokens

    def finish(self, request_id, output):
        self.inner.finish(request_id, output)


class ReplayDrafter(SimDrafter):
    """Proposes placeholders the committed placeholders accept exactly as far as the committed
    tokens of the real run accepted the real proposal made at the same position."""

    def __init__(self, name, executor, proposals: dict, final_tokens: dict):
        super().__init__(name, executor)
        self.proposals, self.final_tokens = proposals, final_tokens

    def propose(self, request_id, context, k):
        tokens = self.proposals[(request_id, self.name, len(context))]
        matched = score_proposal(PendingProposal(len(context), tokens), self.final_tokens[request_id], True)
        return [SIM_TOKEN_ID] * matched + [SIM_REJECTED_ID] * (len(tokens) - matched)


class ReplayExecutor(SimExecutor):
    """The simulator's executor with the real run's row outcomes in place of its draws."""

    def __init__(self, profile, calibration, config, real_steps: list[list[RowResult]]):
        super().__init__(profile, calibration, config)
        self.real_steps = iter(real_steps)

    def draw(self, batch, chains, ks, signals=None, p_mins=None):
        return next(self.real_steps)


def without_confidence(snapshot: dict) -> dict:
    """The trackers' snapshot less each pair's confidence histogram."""
    pairs = {key: {k: v for k, v in pair.items() if k != "confidence"} for key, pair in snapshot["pairs"].items()}
    return {**snapshot, "pairs": pairs}


def batch_schedule(step: int, num_rows: int) -> list[Decision]:
    """SCHEDULE cycled, one decision for the whole batch."""
    return [SCHEDULE[step % len(SCHEDULE)]] * num_rows


def row_schedule(step: int, num_rows: int) -> list[Decision]:
    """SCHEDULE cycled per row: rows of one step on different chains and K (per-row routing)."""
    return [SCHEDULE[(step + 3 * row) % len(SCHEDULE)] for row in range(num_rows)]


def run(engine, requests: dict[str, Request], caches, schedule=batch_schedule) -> list[dict]:
    """Drive `engine` through `schedule` to completion; what every step did, and after.
    `caches(request)`: level -> tokens its cache holds for the request."""
    calls = []
    while engine.has_unfinished:
        engine.admit()
        decisions = schedule(len(calls), len(engine.scheduler.running))
        ks = [engine.draft_length(r, d) for r, d in zip(engine.scheduler.running, decisions)]
        outputs = engine.step(decisions)
        record = engine.last_step
        calls.append({
            "rows": record.request_ids, "decisions": record.decisions, "ks": ks,
            "tokens": [len(r.tokens) for r in record.results], "num_committed": record.num_committed,
            "committed": [len(o.new_token_ids) for o in outputs],
            "finished": [(o.request_id, o.finish_reason) for o in outputs if o.finished],
            "pairs": [[outcome(p) for p in r.pairs] for r in record.results],
            "shadow": [[outcome(p) for p in r.shadow_pairs] for r in record.results],
            "stats": [(s.num_steps, s.num_drafts, s.num_draft_tokens, s.num_accepted_tokens, s.accepted_histogram)
                      for s in (o.stats for o in outputs)],
            "caches": {r.request_id: caches(r) for r in engine.scheduler.running},
            # the draft-stop confidence histogram comes from a model's real forward, like tokens
            "trackers": without_confidence(engine.trackers.snapshot()),
            "waiting": [r.request_id for r in engine.scheduler.waiting],
        })
    calls.append({rid: (len(r.output_token_ids), r.finish_reason, r.status) for rid, r in requests.items()})
    return calls


def profile_with_small() -> LatencyProfile:
    profile = make_profile()
    return LatencyProfile(profile.model, {**profile.levels, "small": profile.levels["draft"]})


@pytest.mark.parametrize("schedule", [batch_schedule, row_schedule])
def test_the_engine_and_the_simulator_agree_call_by_call_on_all_but_tokens_and_clock(target, tokenizer, drafts,
                                                                                       schedule):
    proposals: dict = {}
    real = Engine(target, tokenizer, EngineConfig(**CONFIG), drafts=drafts)
    for drafter in list(real.drafters.values()):
        real.add_drafter(RecordingDrafter(drafter, proposals))
    real_requests = {}
    for i, (prompt, max_tokens) in enumerate(PROMPTS):
        real.add_request(prompt, SamplingParams(max_tokens=max_tokens, ignore_eos=True), request_id=f"r{i}")
        real_requests[f"r{i}"] = real.scheduler.requests[f"r{i}"]
    real_calls = run(real, real_requests, lambda r: {name: level.committed_length(r)
                                                     for name, level in real.levels.items() if name in r.level_slots},
                     schedule)
    assert any(any(call["shadow"]) for call in real_calls[:-1])                   # shadow drafting ran
    assert any(len(call["rows"]) == 2 for call in real_calls[:-1])                # rows shared steps
    assert {d for call in real_calls[:-1] for d in call["decisions"]} == set(SCHEDULE)
    mixed = any(len(set(call["decisions"])) > 1 for call in real_calls[:-1])
    assert mixed == (schedule is row_schedule)

    final_tokens = {rid: r.all_token_ids for rid, r in real_requests.items()}
    outcomes = [[RowResult([SIM_TOKEN_ID] * n, [PairOutcome(*p) for p in pairs])
                 for n, pairs in zip(call["tokens"], call["pairs"])] for call in real_calls[:-1]]
    config = EngineConfig(**CONFIG)
    executor = ReplayExecutor(profile_with_small(), make_calibration(), config, outcomes)
    executor.drafters = {name: ReplayDrafter(name, executor, proposals, final_tokens) for name in real.drafters}
    sim = EngineCore(config, executor, Scheduler(config, set(), None))
    sim.use_clock(executor.now)
    sim_requests = {}
    for rid, request in real_requests.items():
        sim_requests[rid] = Request(rid, [SIM_TOKEN_ID] * len(request.prompt_token_ids), request.params)
        sim.scheduler.add(sim_requests[rid])
    sim_calls = run(sim, sim_requests, lambda r: dict(executor.cached[r.request_id]), schedule)

    assert len(sim_calls) == len(real_calls)
    for i, (real_call, sim_call) in enumerate(zip(real_calls, sim_calls)):
        assert sim_call == real_call, f"call {i}"


def test_a_simulated_step_draws_each_row_on_its_own_chain():
    """Per-row routing in the simulator: a plain row commits one token and no pair outcome, a
    speculating row reports each of its own chain's pairs."""
    executor = SimExecutor(make_profile(), make_calibration(), EngineConfig())
    rows = [Request(f"r{i}", [SIM_TOKEN_ID] * 8, SamplingParams(max_tokens=16)) for i in range(3)]
    decisions = [Decision(), Decision(("ngram", "target"), 3), Decision(("draft", "target"), 2)]
    results = executor.run(rows, decisions, [0, 3, 2])
    assert results[0].tokens == [SIM_TOKEN_ID] and not results[0].pairs
    assert [(p.drafter, p.verifier) for p in results[1].pairs] == [("ngram", "target")]
    assert [(p.drafter, p.verifier, p.num_proposed) for p in results[2].pairs] == [("draft", "target", 2)]
    assert executor.now() > 0
