"""The stable-baselines3 side of a router checkpoint: `sb3_resume.zip` and `vecnormalize.pkl`.

Serving reads only `policy.safetensors` + `manifest.json`. `--resume`, and anyone who wants the
policy in plain SB3, read the model zip and SB3's own VecNormalize pickle beside it (observation
and reward statistics, clip, epsilon, gamma):

    model = PPO.load("checkpoints/router/sb3_resume.zip")
    vecnorm = VecNormalize.load("checkpoints/router/vecnormalize.pkl", DummyVecEnv([make_env]))
    vecnorm.training, vecnorm.norm_reward = False, False
    action, _ = model.predict(vecnorm.normalize_obs(raw_obs), deterministic=True)

chooses what the served `LearnedPolicy` chooses on the same raw observation: both hold the
statistics of one VecNormalize (tests/agents/test_sb3_checkpoint.py checks every step of an
episode). On raw observations `predict` disagrees with the server on most steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from router.checkpoint import manifest_path, read_manifest

RESUME_NAME = "sb3_resume.zip"
VEC_NORMALIZE_NAME = "vecnormalize.pkl"


def save_sb3_checkpoint(model, vec_normalize: VecNormalize | None, directory: Path, overflow_dir: Path,
                        max_zip_bytes: int) -> Path:
    """Write the model zip and `vecnormalize.pkl` beside it into `directory`, or both into
    `overflow_dir` when the zip is over `max_zip_bytes`; return the zip's path.

    No pickle is written without a VecNormalize, and a stale one there is removed (it would
    normalise for a model that never saw normalised observations).
    """
    directory.mkdir(parents=True, exist_ok=True)
    zip_path = directory / RESUME_NAME
    model.save(zip_path)
    if zip_path.stat().st_size > max_zip_bytes:
        overflow_dir.mkdir(parents=True, exist_ok=True)
        zip_path = zip_path.replace(overflow_dir / RESUME_NAME)
        (directory / VEC_NORMALIZE_NAME).unlink(missing_ok=True)
    pickle_path = zip_path.parent / VEC_NORMALIZE_NAME
    if vec_normalize is not None:
        vec_normalize.save(str(pickle_path))
    else:
        pickle_path.unlink(missing_ok=True)
    return zip_path


def apply_normalization(vec_normalize: VecNormalize, normalization: dict) -> None:
    """Set a VecNormalize's observation statistics from a manifest's `normalization` entry."""
    vec_normalize.obs_rms.mean = np.asarray(normalization["mean"], dtype=np.float64)
    vec_normalize.obs_rms.var = np.asarray(normalization["var"], dtype=np.float64)
    vec_normalize.obs_rms.count = float(normalization.get("count", 1e4))
    vec_normalize.clip_obs = float(normalization.get("clip", vec_normalize.clip_obs))
    vec_normalize.epsilon = float(normalization.get("epsilon", vec_normalize.epsilon))


def restore_vec_normalize(resume_zip: str | Path, venv, gamma: float) -> VecNormalize:
    """The VecNormalize a resumed run continues with, wrapping `venv`: the `vecnormalize.pkl`
    beside the zip (observation and reward statistics), else the observation statistics of the
    manifest beside it (checkpoints from before the pickle), else fresh statistics."""
    directory = Path(resume_zip).resolve().parent
    pickle_path = directory / VEC_NORMALIZE_NAME
    if pickle_path.is_file():
        vec_normalize = VecNormalize.load(str(pickle_path), venv)
        vec_normalize.training = True
        return vec_normalize
    vec_normalize = VecNormalize(venv, norm_obs=True, norm_reward=True, gamma=gamma)
    manifest = manifest_path(directory)
    if manifest.is_file() and (normalization := read_manifest(manifest).normalization):
        apply_normalization(vec_normalize, normalization)
    return vec_normalize


def write_vec_normalize_from_manifest(directory: str | Path) -> Path:
    """Write `vecnormalize.pkl` for a checkpoint exported before the pickle existed, from its
    manifest's observation statistics (mean, var, count, clip, epsilon) and training gamma.

    Manifests store no reward statistics, so the pickle's start fresh (mean 0, var 1, count
    1e-4): they only scale a resumed run's rewards, and its first rollout replaces them.
    """
    import gymnasium

    import env  # noqa: F401  (registers SpecRoute-v0)
    from agents.scenarios import sim_env_kwargs
    directory = Path(directory)
    manifest = read_manifest(directory)
    if not manifest.normalization:
        raise ValueError(f"{manifest_path(directory)} records no normalization statistics")
    training = manifest.training
    kwargs = sim_env_kwargs(training.get("profile"), training.get("acceptance"))
    venv = DummyVecEnv([lambda: gymnasium.make("SpecRoute-v0", **kwargs)])
    vec_normalize = VecNormalize(venv, norm_obs=True, norm_reward=True, gamma=float(training.get("gamma", 0.99)))
    apply_normalization(vec_normalize, manifest.normalization)
    path = directory / VEC_NORMALIZE_NAME
    vec_normalize.save(str(path))
    venv.close()
    return path
