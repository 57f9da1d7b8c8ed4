"""The router's view of the live server, built with the code the environment uses.

`ServingObserver` feeds `router.load_stats.LoadStats` from the same events and request fields the
environment's `Episode` uses (arrivals, each step's rows, first tokens, finished requests), and
builds the observation with `router.observation_builder.ObservationBuilder` from the router's `BatchView`
(the running rows, the queue and the trackers' pooled acceptance, as the real backend reads it). So the learned policy sees in serving exactly
the vector layout and meaning it was trained on, and the reward logged for offline evaluation
is the environment's: tokens per second of the step minus the penalty per SLO miss.
All methods run on the engine thread.
"""

from __future__ import annotations

import time

import numpy as np

from engine import Engine, RequestOutput
from engine.batch_view import BatchView
from engine.sequence import Request
from router.load_stats import LoadStats
from router.observation import ObservationSpec
from router.observation_builder import ObservationBuilder


class ServingObserver:
    """Args:
        spec: the observation spec (names and ranges) the policy was trained with.
        stats: load statistics with the server's SLOs.
        slo_penalty: reward subtracted per finished request that missed an SLO (the env's).
    """

    def __init__(self, spec: ObservationSpec, stats: LoadStats, slo_penalty: float):
        self.builder = ObservationBuilder(spec)
        self.spec_version = spec.version
        self.stats = stats
        self.slo_penalty = slo_penalty
        self.num_steps = 0
        self.last_reward = 0.0
        self._requests: dict[str, Request] = {}

    def reset(self) -> None:
        """Forget every request and the load seen so far (a benchmark's next run starts idle)."""
        self.stats = self.stats.fresh()
        self._requests.clear()
        self.last_reward = 0.0

    def observe_added(self, request: Request) -> None:
        self.stats.observe_arrivals(1, time.monotonic())
        self._requests[request.request_id] = request

    def observe_removed(self, request_id: str) -> None:
        self._requests.pop(request_id, None)

    def observe_step(self, engine: Engine, outputs: list[RequestOutput]) -> None:
        """The step's rows, first tokens and finished requests, and its reward (`LoadStats.observe_rows`,
        as `env.episode.Episode.step`)."""
        rows = [(self._requests.get(o.request_id), len(o.new_token_ids)) for o in outputs]
        self.last_reward = self.stats.observe_rows(rows, engine.last_step.latency_s, self.slo_penalty).reward
        for request, _ in rows:
            if request is not None and request.is_finished:
                self.observe_removed(request.request_id)
        self.num_steps += 1

    def acceptance(self, view: BatchView) -> dict[str, float]:
        return {pair: view.pair_acceptance(pair) for pair in self.builder.pairs}

    def observation(self, view: BatchView, last_action: int | None) -> np.ndarray:
        """The router's observation of the step `view` shows, its costs relative to the engine's
        profile (`view.profile`; the arrival rate decays at arrivals only, as in the env)."""
        return self.builder.build(view.rows, view.waiting, self.acceptance(view), self.stats, time.monotonic(),
                                  last_action, view.profile)
