"""What both environment backends share: one engine step of the agent's decision, read back
as the environment's rows, and the trackers' acceptance the observation shows."""

from __future__ import annotations

from engine.decision import Decision
from engine.scheduler import Scheduler
from engine.sequence import Request


class EngineBackend:
    """A backend over `self.engine` (an `engine.core.EngineCore`: the real engine or the simulator's)."""

    engine = None

    @property
    def scheduler(self) -> Scheduler:
        return self.engine.scheduler

    @property
    def has_unfinished(self) -> bool:
        return self.engine.has_unfinished

    def step(self, decision: Decision | list[Decision]) -> tuple[list[tuple[Request, int]], float]:
        """One engine step of `decision` for every row (or one decision per row); each row's
        request with the number of tokens it committed, and the step's latency on the backend's clock."""
        requests = dict(self.engine.scheduler.requests)     # the step pops the ones that finish
        outputs = self.engine.step(decision)
        return [(requests[o.request_id], len(o.new_token_ids)) for o in outputs], self.engine.last_step.latency_s

    def signals(self, running: list[Request]) -> list[dict[str, int]]:
        """Each running row's draft signals for the next step (`StepExecutor.signals`)."""
        return [self.engine.executor.signals(r) for r in running]

    def cached_lengths(self, running: list[Request]) -> list[dict[str, int]]:
        """What each model level's cache holds per running row (`StepExecutor.cached_lengths`)."""
        return [self.engine.executor.cached_lengths(r) for r in running]

    def acceptance(self, pairs: list[str]) -> dict[str, float]:
        trackers = self.engine.trackers
        return {pair: trackers.acceptance(pair) for pair in pairs}
