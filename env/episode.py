"""One episode's bookkeeping, shared by both backends: arrivals, SLOs, reward, observation.

The backend only runs steps and tells the time; everything else (which requests have arrived,
TTFT/TPOT against the SLO, the reward, the observation) is computed here, once, the same way
for the real engine and the simulator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from engine.batch_view import row_views
from engine.decision import Decision
from engine.sequence import Request
from env.arrivals import NOT_YET, think_time
from env.workloads import WorkloadRequest
from router.load_stats import LoadStats, StepOutcome
from router.observation_builder import ObservationBuilder


@dataclass
class Episode:
    window: list[WorkloadRequest]
    stats: LoadStats
    slo_penalty: float
    next_arrival: int = 0
    num_steps: int = 0
    last_action: int | None = None
    requests: dict[str, Request] = field(default_factory=dict)     # every request added, by id
    num_committed: int = 0
    num_finished: int = 0
    time: float = 0.0            # backend time of the last admission, which the observation reads
    think_s: float = 0.0         # closed loop: users' mean think time
    rng: np.random.Generator | None = None     # closed loop: draws think times (None: open loop)
    arrivals: list[float] = field(init=False)  # each request's arrival; closed loop: set when released
    next_release: int = field(init=False)      # closed loop: the next request a finish releases

    def __post_init__(self) -> None:
        self.arrivals = [item.arrival_s for item in self.window]
        self.next_release = sum(t != NOT_YET for t in self.arrivals)

    def release(self, num_finished: int, now: float) -> None:
        """Closed loop: each finish sends its user's next request after a think time (in order,
        so arrivals stay sorted)."""
        for _ in range(num_finished):
            if self.next_release >= len(self.arrivals):
                return
            last = self.arrivals[self.next_release - 1] if self.next_release else 0.0
            self.arrivals[self.next_release] = max(now + think_time(self.rng, self.think_s), last)
            self.next_release += 1

    @property
    def is_done(self) -> bool:
        """Every request of the window has arrived and finished."""
        return self.num_finished == len(self.window)

    def start(self, backend) -> None:
        """Admit the first arrivals; the episode's time starts at the first arrival exactly."""
        backend.skip_to(self.window[0].arrival_s)
        self.admit_arrivals(backend, now=self.window[0].arrival_s)

    def admit_arrivals(self, backend, now: float | None = None) -> None:
        """Hand the backend every request whose arrival time has come; skip idle time to the next
        arrival when nothing is queued or running (exact: nobody waits in an idle engine)."""
        if not backend.has_unfinished and self.next_arrival < len(self.window):
            arrival = self.arrivals[self.next_arrival]
            if backend.now() < arrival < NOT_YET:
                backend.skip_to(arrival)
        now = backend.now() if now is None else now
        self.time = now
        first = self.next_arrival
        while self.next_arrival < len(self.window) and self.arrivals[self.next_arrival] <= now:
            item = self.window[self.next_arrival]
            if item.arrival_s != self.arrivals[self.next_arrival]:      # released by a finish (closed loop)
                item = dataclasses.replace(item, arrival_s=self.arrivals[self.next_arrival])
            request = backend.add(item, f"req-{item.index}")
            self.requests[request.request_id] = request
            self.next_arrival += 1
        self.stats.observe_arrivals(self.next_arrival - first, now)

    def step(self, backend, decision: Decision | list[Decision], action: int) -> StepOutcome:
        """One step of `decision` for every row, or of `decision[i]` for row i (per-row routing);
        `action` is what the observation's last_action shows."""
        rows, latency_s = backend.step(decision)
        outcome = self.stats.observe_rows(rows, latency_s, self.slo_penalty)
        self.num_finished += outcome.num_finished
        self.num_committed += outcome.num_committed
        self.num_steps += 1
        self.last_action = action
        if self.rng is not None:
            self.release(outcome.num_finished, backend.now())
        self.admit_arrivals(backend)
        return outcome

    def observe(self, backend, builder: ObservationBuilder) -> np.ndarray:
        """The observation of the batch the next step runs: waiting requests that fit are admitted
        first (the step would admit them before its forward), so the rows are those a served
        router's view shows (`engine.core.EngineCore.admit`)."""
        scheduler = backend.scheduler
        running = scheduler.admit()
        rows = row_views(running, backend.signals(running) if builder.signal_drafters else None,
                         backend.cached_lengths(running) if builder.catch_up_levels else None)
        return builder.build(rows, scheduler.waiting, backend.acceptance(builder.pairs), self.stats,
                             self.time, self.last_action, getattr(backend.engine, "profile", None))
