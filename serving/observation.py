"""The router's view of the live server, built with the environment's own code.

`ServingObserver` feeds `env.load_stats.LoadStats` from the same events the environment feeds it
(arrivals, finished steps, first tokens, finished requests) and builds the observation with
`env.observation.ObservationBuilder`, so the learned policy sees in serving exactly the vector
layout and meaning it was trained on. All its methods run on the engine thread.
"""

from __future__ import annotations

import time

import numpy as np

from engine import Engine, RequestOutput
from env.load_stats import LoadStats
from env.observation import ObservationBuilder, ObservationSpec


def acceptance_of(engine: Engine) -> dict[str, float]:
    """Acceptance EMA per 'drafter>verifier' pair from the engine's trackers (empty without them)."""
    trackers = getattr(engine, "trackers", None)
    return dict(trackers.snapshot()) if trackers is not None else {}


class ServingObserver:
    """Args:
        spec: the observation spec (names and ranges) the policy was trained with.
        pairs: the 'drafter>verifier' pairs whose acceptance the spec lists, in order.
        num_actions: length of the last-action one-hot.
        stats: load statistics with the server's SLOs.
        slo_penalty: reward subtracted per finished request that missed an SLO (the env's).
    """

    def __init__(self, spec: ObservationSpec, pairs: list[str], num_actions: int, stats: LoadStats,
                 slo_penalty: float):
        self.builder = ObservationBuilder(spec, pairs, num_actions)
        self.spec_version = spec.version
        self.stats = stats
        self.slo_penalty = slo_penalty
        self.num_steps = 0
        self.last_reward = 0.0
        self._arrival: dict[str, float] = {}
        self._first_token: dict[str, float] = {}

    def observe_added(self, request_id: str, now: float) -> None:
        self.stats.observe_arrivals(1, now)
        self._arrival[request_id] = now

    def observe_removed(self, request_id: str) -> None:
        self._arrival.pop(request_id, None)
        self._first_token.pop(request_id, None)

    def observe_step(self, engine: Engine, outputs: list[RequestOutput]) -> None:
        """Step latency, first tokens and finished requests; the step's reward."""
        record = engine.last_step
        now = time.monotonic()
        self.stats.observe_time(now)
        self.stats.observe_step(record.batch_size, record.num_committed, record.latency_s)
        num_violations = 0
        for output in outputs:
            rid = output.request_id
            arrival = self._arrival.get(rid, now)
            if output.new_token_ids and rid not in self._first_token:
                self._first_token[rid] = now
                self.stats.observe_first_token(now - arrival)
            if output.finished:
                num_violations += self.stats.observe_finish(arrival, self._first_token.get(rid), now,
                                                            len(output.output_token_ids))
                self.observe_removed(rid)
        rate = record.num_committed / record.latency_s if record.latency_s > 0 else 0.0
        self.last_reward = float(rate - self.slo_penalty * num_violations)
        self.num_steps += 1

    def observation(self, engine: Engine, last_action: int | None) -> np.ndarray:
        now = time.monotonic()
        self.stats.observe_time(now)
        return self.builder.build(engine.scheduler.running, list(engine.scheduler.waiting), acceptance_of(engine),
                                  self.stats, now, last_action)
