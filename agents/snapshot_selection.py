"""Keep the best policy seen during training, judged on held-out validation episodes.

PPO's last iterate is not necessarily its best: step rewards are noisy (arrivals, acceptance
draws) and a policy can drift away from a good warm start. Every `eval_every` steps this
callback exports the current network exactly as serving will load it, runs it greedily on
validation episodes (seeds disjoint from training and from `agents.evaluate`), and scores it as
the mean over workloads of its reward per decision (or, `metric="goodput"`, its goodput: what
`agents.evaluate` judges) relative to a reference router's on the same episodes; goodput skips
workloads where the reference's is ~0 (a ratio of stray tokens). At the end of training the
best snapshot (weights, observation and reward statistics) is put back into the model before
export.
"""

from __future__ import annotations

import copy

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from agents.export import pack_policy
from agents.rollout import run_episode
from router.learned_policy import LearnedPolicy

VALIDATION_SEED = 30_000
METRICS = ("reward", "goodput")
MIN_GOODPUT = 0.5        # tokens/s: below it a reference's goodput is stray tokens, not a level to beat


class SnapshotSelection(BaseCallback):
    """Args:
        eval_env: a SpecRoute env (not one of the training envs).
        workloads: name -> WorkloadSpec of the validation episodes.
        reference: the router scores are relative to (the cost model).
        vec_normalize: the training VecNormalize (its statistics belong to each snapshot), or None.
        eval_every: environment steps between evaluations.
        seeds: validation episodes per workload.
        metric: "reward" (per decision) or "goodput".
    """

    def __init__(self, eval_env, workloads: dict, reference, vec_normalize=None, eval_every: int = 20_000,
                 seeds: int = 1, verbose: int = 0, metric: str = "reward"):
        super().__init__(verbose)
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.metric = metric
        self.eval_env = eval_env
        self.workloads = dict(workloads)
        self.reference = reference
        self.vec_normalize = vec_normalize
        self.eval_every = eval_every
        self.seeds = seeds
        self.reference_rewards: dict[str, float] = {}
        self.history: list[dict] = []
        self.best: dict | None = None
        self._last_eval = -eval_every

    def _rewards(self, policy) -> dict[str, float]:
        def value(result) -> float:
            return result.mean_reward if self.metric == "reward" else result.goodput
        return {name: float(np.mean([value(run_episode(self.eval_env, policy, VALIDATION_SEED + s, {"workload": spec}))
                                     for s in range(self.seeds)]))
                for name, spec in self.workloads.items()}

    def evaluate_now(self) -> float:
        """Score the model as it is now and remember it if it is the best so far."""
        if not self.reference_rewards:
            self.reference_rewards = self._rewards(self.reference)
        inner = self.eval_env.unwrapped
        packed = pack_policy(self.model, obs_spec_version=inner.obs_spec.version, obs_names=inner.obs_spec.names,
                             actions=inner.decisions, obs_min=inner.observation_space.low,
                             obs_max=inner.observation_space.high, vec_normalize=self.vec_normalize)
        policy = LearnedPolicy(packed.manifest, packed.tensors)
        rewards = self._rewards(policy)
        judged = [w for w in rewards if self.metric == "reward" or self.reference_rewards[w] > MIN_GOODPUT]
        score = float(np.mean([rewards[w] / max(abs(self.reference_rewards[w]), 1e-9) for w in judged]))
        self.history.append({"timesteps": int(self.num_timesteps), "score": score})
        if self.best is None or score > self.best["score"]:
            self.best = {"score": score, "timesteps": int(self.num_timesteps),
                         "state_dict": copy.deepcopy(self.model.policy.state_dict()),
                         "obs_rms": copy.deepcopy(getattr(self.vec_normalize, "obs_rms", None)),
                         "ret_rms": copy.deepcopy(getattr(self.vec_normalize, "ret_rms", None))}
        if self.verbose:
            print(f"validation at {self.num_timesteps} steps: {score:.4f} x reference "
                  f"(best {self.best['score']:.4f} at {self.best['timesteps']})")
        return score

    def _on_rollout_start(self) -> None:
        if self.num_timesteps - self._last_eval >= self.eval_every:
            self._last_eval = self.num_timesteps
            self.evaluate_now()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self.evaluate_now()

    def restore_best(self) -> dict:
        """Load the best snapshot into the model (and its statistics into VecNormalize, whose
        reward scale the snapshot's critic was fit to); return a summary."""
        if self.best is None:
            raise RuntimeError("no snapshot was evaluated")
        self.model.policy.load_state_dict(self.best["state_dict"])
        if self.vec_normalize is not None and self.best["obs_rms"] is not None:
            self.vec_normalize.obs_rms = self.best["obs_rms"]
            self.vec_normalize.ret_rms = self.best["ret_rms"]
        return {"best_timesteps": self.best["timesteps"], "best_score": self.best["score"],
                "reference": getattr(self.reference, "name", type(self.reference).__name__),
                "metric": self.metric, "reference_rewards": self.reference_rewards, "history": self.history,
                "workloads": list(self.workloads), "seeds": self.seeds}
