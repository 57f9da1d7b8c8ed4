"""EnvConfig's layout: the backends' knobs nested, the flat gymnasium keywords still taken, each
default declared once."""

from __future__ import annotations

import dataclasses

import gymnasium
import pytest

from env import EnvConfig, EnvConfigError, RealBackendConfig, SimBackendConfig
from router.config import RouterConfig


def make_engine():
    raise AssertionError("never called: the config only holds it")


def test_flat_keywords_and_nested_configs_build_equal_configs():
    flat = EnvConfig.from_kwargs(backend="sim", workload="humaneval", max_num_seqs=4, profile="p.json",
                                 randomize_latency=0.3, model="local/model", engine_factory=make_engine,
                                 real_clock="cpu", dtype="float32", acceptance="a.json")
    nested = EnvConfig(backend="sim", workload="humaneval", max_num_seqs=4, acceptance="a.json",
                       sim=SimBackendConfig(profile="p.json", randomize_latency=0.3),
                       real=RealBackendConfig(model="local/model", engine_factory=make_engine, real_clock="cpu",
                                              dtype="float32"))
    assert flat == nested
    assert (flat.sim.profile, flat.real.model, flat.real.dtype) == ("p.json", "local/model", "float32")
    assert EnvConfig.from_kwargs() == EnvConfig()


def test_gymnasium_make_takes_either_form(sim_files):
    profile, acceptance = sim_files
    flat = gymnasium.make("SpecRoute-v0", backend="sim", profile=profile, acceptance=acceptance,
                          randomize_acceptance=0.5)
    nested = gymnasium.make("SpecRoute-v0", backend="sim", acceptance=acceptance,
                            sim=SimBackendConfig(profile=profile, randomize_acceptance=0.5))
    assert flat.unwrapped.config == nested.unwrapped.config
    assert flat.unwrapped.backend.randomize_acceptance == 0.5


def test_the_other_backend_s_knobs_are_accepted_and_checked_whichever_runs():
    assert EnvConfig.from_kwargs(backend="real", randomize_latency=0.5).sim.randomize_latency == 0.5
    assert EnvConfig.from_kwargs(backend="sim", real_clock="cpu", model="x").real.model == "x"
    with pytest.raises(EnvConfigError, match="randomize_latency must be a number in"):
        EnvConfig.from_kwargs(backend="real", randomize_latency=5)
    with pytest.raises(EnvConfigError, match="real_clock must be 'wall' or 'cpu'"):
        EnvConfig.from_kwargs(backend="sim", real_clock="gpu")
    with pytest.raises(EnvConfigError, match="engine_factory must be callable"):
        EnvConfig.from_kwargs(backend="sim", engine_factory="engine")


def test_a_knob_given_both_flat_and_nested_or_a_bad_nested_value_is_refused():
    with pytest.raises(EnvConfigError, match=r"pass \['profile'\] inside sim=... or as keywords, not both"):
        EnvConfig.from_kwargs(sim=SimBackendConfig(), profile="p.json")
    with pytest.raises(EnvConfigError, match="real must be a RealBackendConfig"):
        EnvConfig(real={"model": "x"})
    with pytest.raises(EnvConfigError, match="unknown SpecRoute-v0 arguments"):
        EnvConfig.from_kwargs(colour="red")


def test_the_observation_ranges_are_the_router_s():
    """One declaration: the env's ranges and penalty default to RouterConfig's, and are checked by it."""
    config = EnvConfig()
    assert config.router_config() == RouterConfig(max_batch=config.max_num_seqs, max_model_len=config.max_model_len,
                                                  slo_tpot_s=config.slo_tpot_s, slo_ttft_s=config.slo_ttft_s)
    with pytest.raises(EnvConfigError, match="max_rate must be a finite number > 0"):
        EnvConfig(max_rate=0)
    with pytest.raises(EnvConfigError, match="slo_penalty must be a finite number >= 0"):
        EnvConfig(slo_penalty=-1)
    names = {item.name for item in dataclasses.fields(EnvConfig)}
    assert not names & {item.name for item in dataclasses.fields(SimBackendConfig)} \
        and not names & {item.name for item in dataclasses.fields(RealBackendConfig)}
