"""SpecRoute's Gymnasium environment. Importing `env` registers `SpecRoute-v0`.

    import gymnasium
    import env  # registers SpecRoute-v0

    sim = gymnasium.make("SpecRoute-v0", backend="sim", workload="spec_bench")
    obs, info = sim.reset(seed=0)
    obs, reward, terminated, truncated, info = sim.step(sim.action_space.sample())

The spec (spaces, reward, episode end, arguments) is `SpecRouteEnv`'s docstring; the settings are
`EnvConfig` (what both backends read; `SimBackendConfig` and `RealBackendConfig` what one
does); workloads are `WORKLOADS` presets or `WorkloadSpec`s; `python -m env.calibrate`
fits the simulator's acceptance models on the real engine.

Imports data, cli, engine and router; agents, serving and the benchmarks build on it (tests/test_layout.py).
"""

from gymnasium.envs.registration import register, registry

from env.config import DEFAULT_ACTIONS, EnvConfig, EnvConfigError, RealBackendConfig, SimBackendConfig
from env.specroute_env import SpecRouteEnv
from env.workloads import WORKLOADS, WorkloadSpec, build_window, load_sweep, resolve_workload

ENV_ID = "SpecRoute-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="env.specroute_env:SpecRouteEnv")

__all__ = ["DEFAULT_ACTIONS", "ENV_ID", "EnvConfig", "EnvConfigError", "RealBackendConfig", "SimBackendConfig",
           "SpecRouteEnv", "WORKLOADS", "WorkloadSpec", "build_window", "load_sweep", "resolve_workload"]
