"""The guarded router: the learned policy when safe, the fallback otherwise, each cause logged once."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from engine import Decision
from router.decision_log import read_decision_log
from router.observation import OBS_SPEC_VERSION
from serving.app import create_app
from serving.config import ServerConfig
from tests.serving.conftest import write_checkpoint

ACTIONS = [Decision(), Decision(("ngram", "target"), 2), Decision(("ngram", "target"), 4)]
REQUEST = {"prompt": "the cat sat on the mat. the cat sat on the", "max_tokens": 12, "temperature": 0}
SERVER = dict(max_model_len=256, max_num_seqs=4, max_queue=4)


def fallback_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "falling back" in r.getMessage()]


def serve_requests(state, num_requests: int = 3) -> dict:
    with TestClient(create_app(state)) as client:
        for _ in range(num_requests):
            assert client.post("/v1/completions", json=REQUEST).status_code == 200
        return client.get("/ready").json()["router"]


def test_a_valid_policy_routes_every_step(make_state, tmp_path):
    policy = write_checkpoint(tmp_path / "router", ServerConfig(**SERVER), ACTIONS, preferred=2)
    state = make_state(("ngram", "target"), 3, policy=str(policy), **SERVER)
    status = serve_requests(state)
    assert status["source"] == "learned" and status["fallbacks"] == {}
    assert status["decisions"]["learned"] > 0 and status["decisions"]["fallback"] == 0
    assert 'chain="ngram>target",k="4"' in state.metrics.render().decode().replace('model_name="tiny",', "")


@pytest.mark.parametrize("damage, cause", [
    ("missing", "checkpoint_missing"), ("truncated", "checkpoint_corrupt"), ("garbage_manifest", "checkpoint_corrupt"),
    ("other_spec", "checkpoint_spec"), ("unknown_level", "checkpoint_spec")])
def test_a_bad_checkpoint_starts_on_the_fallback_with_one_warning(make_state, tmp_path, caplog, damage, cause):
    directory = tmp_path / "router"
    actions = ACTIONS + [Decision(("draft9", "target"), 2)] if damage == "unknown_level" else ACTIONS
    if damage != "missing":
        write_checkpoint(directory, ServerConfig(**SERVER), actions)
    if damage == "truncated":
        weights = directory / "policy.safetensors"
        weights.write_bytes(weights.read_bytes()[:-7])
    elif damage == "garbage_manifest":
        (directory / "manifest.json").write_text("{not json")
    elif damage == "other_spec":
        manifest = json.loads((directory / "manifest.json").read_text())
        manifest["obs_spec"]["version"] = "specroute-obs-v0"
        (directory / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="serving"):
        state = make_state(("ngram", "target"), 3, policy=str(directory), **SERVER)
        status = serve_requests(state)
    assert status["source"] == "fallback" and status["decisions"]["learned"] == 0
    assert status["fallbacks"] == {cause: status["decisions"]["fallback"]}
    assert len(fallback_warnings(caplog)) == 1 and cause in fallback_warnings(caplog)[0]


def test_other_spec_means_other_observation_names(tmp_path):
    """A policy trained with another action list has another observation layout: refused."""
    from router.learned_policy import LearnedPolicy
    from router.checkpoint import CheckpointSpecMismatch
    from serving.launch import build_observer
    write_checkpoint(tmp_path / "router", ServerConfig(**SERVER), ACTIONS)
    other = build_observer(ServerConfig(**SERVER), ACTIONS[:2]).builder.spec
    with pytest.raises(CheckpointSpecMismatch):
        LearnedPolicy.load(tmp_path / "router", obs_spec_version=other.version, obs_names=other.names)


@pytest.mark.parametrize("guard, cause", [("out_of_range", "out_of_range"), ("inf_output", "nan_output"),
                                          ("slow", "slow_decision")])
def test_runtime_guards_fall_back_per_step_and_warn_once(make_state, tmp_path, caplog, guard, cause):
    kwargs = {"obs_max": 1e-3} if guard == "out_of_range" else {"scale": 1e41} if guard == "inf_output" else {}
    policy = write_checkpoint(tmp_path / "router", ServerConfig(**SERVER), ACTIONS, preferred=2, **kwargs)
    extra = {"max_decision_ms": 1e-6} if guard == "slow" else {}
    with caplog.at_level(logging.WARNING, logger="serving"):
        state = make_state(("ngram", "target"), 3, policy=str(policy), **SERVER, **extra)
        status = serve_requests(state)
    assert status["source"] == "learned"            # loaded, but not trusted on these steps
    assert status["decisions"]["learned"] == 0 and status["fallbacks"][cause] == status["decisions"]["fallback"] > 3
    assert len(fallback_warnings(caplog)) == 1 and cause in fallback_warnings(caplog)[0]


def test_decisions_are_logged_for_offline_evaluation(make_state, tmp_path):
    policy = write_checkpoint(tmp_path / "router", ServerConfig(**SERVER), ACTIONS, preferred=1)
    log = tmp_path / "decisions.jsonl"
    state = make_state(("ngram", "target"), 3, policy=str(policy), decision_log=str(log), **SERVER)
    serve_requests(state, num_requests=2)
    rows = read_decision_log(log)
    assert len(rows) >= 5
    dim = len(state.router.observer.builder.spec.names)
    for row, following in zip(rows, rows[1:]):
        assert row.action == 1 and row.propensity == 1.0 and len(row.obs) == dim
        assert row.policy_version.startswith("learned-ppo:") and row.obs_spec_version == OBS_SPEC_VERSION
        assert row.reward > 0 and following.step == row.step + 1
    # the observation records the action just taken: the next obs' one-hot marks action 1
    assert rows[0].next_obs[dim - len(ACTIONS) + 1] == 1.0


def test_the_cost_model_is_the_default_fallback(make_engine, tmp_path):
    """Without a policy the server routes with the cost model over a measured profile."""
    from engine.profile import measure_profile
    from serving.launch import state_for_engine

    engine = make_engine(max_model_len=256, max_num_seqs=4)
    engine.set_profile(measure_profile(engine, batches=(1, 4), tokens=(1, 8), contexts=(16, 128), budget_s=1.0,
                                       repeats=1))
    state = state_for_engine(engine, ServerConfig(policy=str(tmp_path / "none"), decision_log="", **SERVER), "tiny")
    status = serve_requests(state)
    assert status["fallback"] == "CostModelRouter" and status["decisions"]["fallback"] > 0
    chosen = state.engine.router.fallback.last_estimate.decision
    assert chosen in state.engine.router.fallback.cost_model.decisions
    assert status["candidates"] == [d.label for d in state.engine.router.fallback.cost_model.decisions]


@pytest.mark.parametrize("mode, label", [("plain", "plain"), ("suffix>target@4", "suffix>target@k4")])
def test_fixed_router_modes_route_every_step_with_that_decision(make_engine, mode, label):
    from serving.launch import state_for_engine

    engine = make_engine(max_model_len=256, max_num_seqs=4)
    state = state_for_engine(engine, ServerConfig(router=mode, decision_log="", **SERVER), "tiny")
    status = serve_requests(state)
    assert status["mode"] == mode and status["decisions"]["learned"] == 0
    assert state.engine.router.fallback.decision.label == label and status["candidates"] == [label]
    assert {d.label for d in state.engine.last_step.decisions} <= {label}


def test_an_unknown_router_mode_is_refused():
    with pytest.raises(ValueError, match="plain"):
        ServerConfig(router="warp>target@4x")


def test_trackers_start_from_the_calibrated_acceptance(make_engine):
    from env.sim_calibration import SimCalibration
    from serving.launch import seed_acceptance_priors

    engine = make_engine(("ngram", "target"), 2)
    seed_acceptance_priors(engine, "SmolLM2-135M-Instruct")
    from env.config import resolve_path

    fitted = SimCalibration.load(resolve_path("profiles/acceptance_SmolLM2-135M-Instruct.json")).acceptance.per_token_acceptance()
    assert fitted and engine.trackers.priors == fitted
    assert engine.trackers.acceptance("ngram>target") == pytest.approx(fitted["ngram>target"])


def test_a_model_without_calibration_keeps_the_flat_prior(make_engine):
    from serving.launch import seed_acceptance_priors

    engine = make_engine(("ngram", "target"), 2)
    seed_acceptance_priors(engine, "no-such-model")
    assert engine.trackers.priors == {} and engine.trackers.acceptance("ngram>target") == engine.trackers.prior


def test_the_cost_model_scores_chains_through_every_level_the_engine_has(make_engine):
    """A quantized copy of the target (and the draft) join the cost model's choices, 4-level chains included."""
    from serving.launch import default_actions, fallback_decisions

    engine = make_engine(max_model_len=64, quantized_levels="int4")
    labels = {d.label for d in fallback_decisions(engine, default_actions(engine))}
    assert {"int4>target@k2", "ngram>int4>target@k4"} <= labels                     # the env's actions
    assert len(labels) == len(fallback_decisions(engine, default_actions(engine)))        # no decision twice
    plain_only = {d.label for d in fallback_decisions(engine, [Decision()])}       # ladder chains join the rest
    assert {"int4>target@k2", "draft>int4>target@k8", "ngram>draft>int4>target@k4"} <= plain_only
