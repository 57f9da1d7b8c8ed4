"""`python -m train_router` with a tiny budget writes a checkpoint the serving loader accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents.rollout import run_episode
from cli.dataclass_args import parse_dataclass
from data.paths import REPO_ROOT
from router.learned_policy import LearnedPolicy
from train_router import TrainConfig, main


def check_checkpoint(out: Path, algo: str, make_sim_env) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["algo"] == algo and manifest["training"]["timesteps"] == 256
    assert manifest["normalization"] is not None and manifest["normalization"]["count"] > 0
    assert (out / "sb3_resume.zip").is_file()

    environment = make_sim_env()
    inner = environment.unwrapped
    policy = LearnedPolicy.load(out, obs_spec_version=inner.obs_spec.version, obs_names=inner.obs_spec.names,
                                actions=inner.decisions)
    result = run_episode(environment, policy, seed=0)
    assert result.num_steps > 0 and not result.truncated
    low, high = np.array(manifest["obs_range"]["min"]), np.array(manifest["obs_range"]["max"])
    assert (low <= high).all() and (high > low).any()


def test_tiny_training_run_produces_a_loadable_checkpoint(tmp_path, agent_sim_files, make_sim_env):
    profile, acceptance = agent_sim_files
    out = tmp_path / "router"
    command = [sys.executable, "-m", "train_router", "--timesteps", "256", "--n-envs", "1",
               "--n-steps", "128", "--batch-size", "64", "--output-dir", str(out), "--runs-dir", str(tmp_path / "runs"),
               "--profile", profile, "--acceptance", acceptance, "--eval-episodes", "1", "--no-progress-bar",
               "--warm-start-steps", "128", "--validation-requests", "4"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    check_checkpoint(out, "ppo", make_sim_env)
    assert "warm start from cost-model" in done.stdout
    warm = json.loads((out / "manifest.json").read_text())["training"]["warm_start_result"]
    assert warm["num_steps"] == 128 and 0.0 <= warm["imitation_accuracy"] <= 1.0
    selection = json.loads((out / "manifest.json").read_text())["training"]["selection"]
    assert selection["best_timesteps"] in [h["timesteps"] for h in selection["history"]]
    assert len(selection["history"]) >= 2 and selection["reference"] == "cost-model"
    evaluation = json.loads((out / "manifest.json").read_text())["evaluation"]
    assert set(evaluation["workloads"]["poisson-high"]) == {"learned", "cost-model", "no-spec"}
    assert 0.0 <= evaluation["workloads"]["single-user"]["learned"]["fallback_share"] <= 1.0


def test_dqn_training_exports_its_q_network(tmp_path, agent_sim_files, make_sim_env):
    profile, acceptance = agent_sim_files
    cfg = TrainConfig(algo="dqn", timesteps=256, n_envs=1, batch_size=32, output_dir=str(tmp_path / "router"),
                      runs_dir=str(tmp_path / "runs"), profile=profile, acceptance=acceptance, eval_episodes=0,
                      progress_bar=False, workload="sharegpt",
                      validation_requests=4, select_metric="goodput")
    out = main(cfg)
    check_checkpoint(out, "dqn", make_sim_env)
    assert json.loads((out / "manifest.json").read_text())["training"]["selection"]["metric"] == "goodput"
    assert json.loads((out / "manifest.json").read_text())["network"]["output"] == "q_values"


def test_bad_arguments_are_rejected_before_training(capsys):
    with pytest.raises(ValueError, match="algo"):
        TrainConfig(algo="sac")
    with pytest.raises(ValueError, match="unknown workload"):
        TrainConfig(workload="nope")
    with pytest.raises(ValueError, match="net_arch"):
        TrainConfig(net_arch=())
    with pytest.raises(ValueError, match="select_metric must be 'reward' or 'goodput'"):
        TrainConfig(select_metric="tokens")
    with pytest.raises(SystemExit) as exit_info:
        parse_dataclass(TrainConfig, ["--timesteps", "0"])
    assert exit_info.value.code == 2
    assert "timesteps must be >= 1" in capsys.readouterr().err
