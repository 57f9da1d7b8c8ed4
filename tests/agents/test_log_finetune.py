"""`python -m train_router --from-log PATH`: fine-tune the deployed router on its decision log, and
replace it only when off-policy evaluation on the held-out part shows the candidate no worse."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from safetensors.numpy import save as save_safetensors

from agents.export import PackedPolicy, write_policy
from agents.log_finetune import FineTuneConfig, main
from data.paths import REPO_ROOT
from engine.decision import Decision
from router.checkpoint import ActionSpec, LayerSpec, Manifest, read_manifest, sha256_of
from router.decision_log import DecisionLogRow, DecisionLogWriter

OBS_DIM, SPEC = 4, "specroute-obs-v4"
ACTIONS = [Decision(), Decision(("ngram", "target"), 4)]


def make_deployed(directory, prefers: int) -> str:
    """A tiny exported MLP that picks action `prefers` everywhere on [0, 1]^4; its sha256."""
    rng = np.random.default_rng(0)
    tensors = {"layers.0.weight": rng.normal(0, 0.1, (8, OBS_DIM)).astype(np.float32),
               "layers.0.bias": np.zeros(8, np.float32),
               "layers.1.weight": rng.normal(0, 0.1, (2, 8)).astype(np.float32),
               "layers.1.bias": np.array([1.5, 0.0] if prefers == 0 else [0.0, 1.5], np.float32)}
    data = save_safetensors(tensors)
    manifest = Manifest("ppo", SPEC, [f"f{i}" for i in range(OBS_DIM)], [ActionSpec.from_decision(d) for d in ACTIONS],
                        [LayerSpec("layers.0", OBS_DIM, 8, "tanh"), LayerSpec("layers.1", 8, 2, "identity")],
                        "logits", [0.0] * OBS_DIM, [1.0] * OBS_DIM, sha256_of(data), len(data))
    write_policy(directory, PackedPolicy(manifest, tensors, data))
    return manifest.sha256


def write_log(path, good_fit: int, good_held_out: int, num_rows: int = 400, seed: int = 1) -> None:
    """A uniformly exploring logger's rows (propensity 1/2) whose reward is 1 for the good action:
    `good_fit` over the first 70% of the log, `good_held_out` over the rest."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(0, 1, (num_rows + 1, OBS_DIM))
    with DecisionLogWriter(path) as writer:
        for i in range(num_rows):
            action = int(rng.integers(2))
            good = good_fit if i < 0.7 * num_rows else good_held_out
            writer.write(DecisionLogRow(obs=obs[i].tolist(), action=action, propensity=0.5,
                                        reward=float(action == good) + rng.normal(0, 0.1), next_obs=obs[i + 1].tolist(),
                                        done=False, policy_version="eps1", episode=i // 20, step=i % 20,
                                        action_probs=[0.5, 0.5], obs_spec_version=SPEC))


def test_a_candidate_the_log_shows_better_replaces_the_deployed_policy(tmp_path):
    policy = tmp_path / "router"
    old_sha = make_deployed(policy, prefers=1)
    write_log(tmp_path / "log.jsonl", good_fit=0, good_held_out=0)
    done = subprocess.run([sys.executable, "-m", "train_router", "--from-log", str(tmp_path / "log.jsonl"),
                           "--policy", str(policy), "--bootstrap", "50"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    verdict = done.stdout.strip().splitlines()[-1]
    assert verdict.startswith("OPE dr on 120 held-out decisions") and f"no worse: replaced {policy}" in verdict
    manifest = read_manifest(policy)
    assert manifest.sha256 != old_sha and read_manifest(policy / "previous").sha256 == old_sha
    gate = manifest.training["fine_tuned"]["gate"]
    assert gate["ci95"][0] >= 0 and gate["difference"] > 0.5 and manifest.obs_min == [0.0] * OBS_DIM


def test_a_candidate_the_held_out_log_shows_worse_is_kept_beside_it(tmp_path, capsys):
    """The machine changed mid-log: what paid while fitting does not pay in the held-out part."""
    policy = tmp_path / "router"
    old_sha = make_deployed(policy, prefers=0)
    write_log(tmp_path / "log.jsonl", good_fit=1, good_held_out=0)
    assert main(FineTuneConfig(from_log=str(tmp_path / "log.jsonl"), policy=str(policy), bootstrap=50)) == 0
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"not shown no worse: kept {policy}; candidate written to {policy / 'candidate'}" in verdict
    assert read_manifest(policy).sha256 == old_sha
    gate = read_manifest(policy / "candidate").training["fine_tuned"]["gate"]
    assert gate["ci95"][0] < 0 and gate["difference"] < -0.5


def test_a_bad_log_is_refused_with_exit_code_2(tmp_path, capsys):
    policy = tmp_path / "router"
    make_deployed(policy, prefers=0)
    log = tmp_path / "log.jsonl"
    write_log(log, 0, 0)
    lines = log.read_text().splitlines()
    cases = {"truncated": ("\n".join(lines[:5]) + '\n{"obs": [0.1,', "log.jsonl:6: bad decision log row"),
             "short": ("\n".join(lines[:30]), "30 decisions; fitting and judging need 20 each"),
             "spec": (lines[0].replace(SPEC, "specroute-obs-v3"), "logged with observation spec 'specroute-obs-v3'")}
    for name, (text, message) in cases.items():
        log.write_text(text + "\n")
        assert main(FineTuneConfig(from_log=str(log), policy=str(policy))) == 2, name
        assert message in capsys.readouterr().out, name
    assert main(FineTuneConfig(from_log=str(tmp_path / "absent.jsonl"), policy=str(policy))) == 2
    assert "no decision log at" in capsys.readouterr().out
    row = json.loads(lines[0]) | {"obs": [0.0] * 3, "next_obs": [0.0] * 3}
    log.write_text(json.dumps(row) + "\n")
    assert main(FineTuneConfig(from_log=str(log), policy=str(policy))) == 2
    assert "decision 1 has 3 features, the policy reads 4" in capsys.readouterr().out
    done = subprocess.run([sys.executable, "-m", "train_router", "--from-log", str(log), "--holdout", "1.5"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "holdout must be in (0, 1)" in done.stderr
