"""Simulator files built in code (the env tests' builders), and a small sim env for the agents."""

from __future__ import annotations

import gymnasium
import pytest

import env  # noqa: F401  (registers SpecRoute-v0)
from tests.env.conftest import sim_files  # noqa: F401  (a fixture: the simulator files)


@pytest.fixture(scope="session")
def agent_sim_files(sim_files):
    """(profile path, acceptance path) of a small simulator: the env tests' files."""
    return sim_files


@pytest.fixture
def make_sim_env(agent_sim_files):
    """make_sim_env(**workload fields) -> a SpecRoute-v0 sim env over a short ShareGPT window."""
    profile, acceptance = agent_sim_files
    made = []

    def build(**workload):
        fields = {"name": "sharegpt", "num_requests": 8, "rate": 4.0, "max_new_tokens": 24, **workload}
        environment = gymnasium.make("SpecRoute-v0", backend="sim", profile=profile, acceptance=acceptance,
                                     workload=fields)
        made.append(environment)
        return environment

    yield build
    for environment in made:
        environment.close()
