"""Run a Policy for whole episodes of a SpecRoute env and measure what a serving user sees.

Per episode: reward per decision, output tokens per second over the episode's span, and per
request TTFT, TPOT (mean time per output token after the first) and whether it met both SLOs.
Goodput is the output tokens of requests that met their SLOs per second (DistServe's goodput
in tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agents.policies import ObservationIndex
from router.policy import observe_reward, reset_policy


@dataclass
class EpisodeResult:
    """What one episode of one policy did."""

    num_steps: int = 0
    total_reward: float = 0.0
    span_s: float = 0.0
    num_tokens: int = 0
    num_good_tokens: int = 0
    ttft_s: list[float] = field(default_factory=list)
    tpot_s: list[float] = field(default_factory=list)
    slo_met: list[bool] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)          # per step; a per-row router's most common one
    num_mixed_steps: int = 0                                   # steps whose rows ran different actions
    batch_sizes: list[float] = field(default_factory=list)
    truncated: bool = False

    @property
    def mean_reward(self) -> float:
        return self.total_reward / max(self.num_steps, 1)

    @property
    def tokens_per_s(self) -> float:
        return self.num_tokens / self.span_s if self.span_s > 0 else 0.0

    @property
    def goodput(self) -> float:
        return self.num_good_tokens / self.span_s if self.span_s > 0 else 0.0

    @property
    def slo_attainment(self) -> float:
        return float(np.mean(self.slo_met)) if self.slo_met else 0.0


def episode_requests(env) -> list:
    """The requests of the env's current episode (engine `Request`s with arrival/first/finish times)."""
    episode = getattr(env.unwrapped, "_episode", None)
    if episode is None:
        raise RuntimeError("the environment has no episode: call reset() first")
    return list(episode.requests.values())


def request_metrics(env, result: EpisodeResult, slo_tpot_s: float | None = None) -> None:
    """Fill TTFT / TPOT / SLO / goodput of `result` from the finished episode's requests;
    `slo_tpot_s` replaces the env's TPOT SLO for goodput (a workload's own, tighter SLO)."""
    config = env.unwrapped.config
    slo_tpot_s = config.slo_tpot_s if slo_tpot_s is None else slo_tpot_s
    requests = episode_requests(env)
    if not requests:
        return
    start = min(r.arrival_time for r in requests)
    end = max((r.finish_time for r in requests if r.finish_time is not None), default=start)
    result.span_s = end - start
    for r in requests:
        num_output = len(r.output_token_ids)
        result.num_tokens += num_output
        if r.finish_time is None or r.first_token_time is None:
            result.slo_met.append(False)          # unfinished at truncation: a miss
            continue
        ttft = r.first_token_time - r.arrival_time
        tpot = (r.finish_time - r.first_token_time) / (num_output - 1) if num_output > 1 else 0.0
        met = ttft <= config.slo_ttft_s and tpot <= slo_tpot_s
        result.ttft_s.append(ttft)
        result.tpot_s.append(tpot)
        result.slo_met.append(met)
        result.num_good_tokens += num_output if met else 0


def run_episode(env, policy, seed: int, options: dict | None = None,
                slo_tpot_s: float | None = None) -> EpisodeResult:
    """One episode from reset(seed) to its end; the policy acts on every step (goodput under
    `slo_tpot_s` when given, see `request_metrics`)."""
    obs, _ = env.reset(seed=seed, options=options)
    reset_policy(policy)
    result = EpisodeResult()
    spec = env.unwrapped.obs_spec
    index = ObservationIndex(spec.names, spec.scale)
    done = False
    while not done:
        action = policy.act(obs)          # an index, or one per row (a per-row router)
        rows = list(action) if isinstance(action, (list, tuple)) else [int(action)]
        result.actions.append(max(set(rows), key=rows.count))
        result.num_mixed_steps += len(set(rows)) > 1
        result.batch_sizes.append(index.batch(obs))
        obs, reward, terminated, truncated, _ = env.step(action)
        observe_reward(policy, float(reward))
        result.num_steps += 1
        result.total_reward += float(reward)
        done = terminated or truncated
        result.truncated = bool(truncated)
    request_metrics(env, result, slo_tpot_s)
    return result
