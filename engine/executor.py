"""Step executors: what differs between the real engine and the simulator, and nothing else.

`engine.core.EngineCore.step` routes, caps K, commits, scores shadow proposals, calls the
executor's rollback and feeds the trackers, the same way for every executor. An executor only
runs the speculative part of a step and keeps its levels' state:

    run(batch, decisions, ks)  draft and verify; one `RowResult` per row (`engine.spec_step`)
    sync(request, decision, k, result, num_committed)
                               after the row's commit: roll each level back to what was committed
    release(request)           the request finished or was aborted: free what it holds
    step_latency(elapsed_s)    the step's latency (the real one measured; a simulator's modelled)
    signals(request)           each model-free drafter's draft signal for the row's next step
                               (`ModelFreeDrafter.signal`), read before the step is routed
    cached_lengths(request)    tokens each model level's cache holds for the row (0: none yet),
                               so a router can charge a level's catch-up before choosing it

`drafters` are the model-free drafters that shadow drafting scores (engine/shadow_drafts.py);
`level_names` every level a chain may name and `model_free_names` those that may only start one.
`ModelExecutor` is the real one (model levels with KV caches and model-free drafters);
`env.sim_executor.SimExecutor` is the simulator's.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from engine.decision import Decision
from engine.drafters import ModelFreeDrafter
from engine.levels import ModelLevel
from engine.sequence import Request
from engine.spec_step import RowResult, run_step


class StepExecutor(Protocol):
    drafters: dict[str, ModelFreeDrafter]

    @property
    def level_names(self) -> list[str]: ...

    @property
    def model_free_names(self) -> Collection[str]: ...

    def run(self, batch: list[Request], decisions: list[Decision], ks: list[int]) -> list[RowResult]: ...

    def sync(self, request: Request, decision: Decision, k: int, result: RowResult, num_committed: int) -> None: ...

    def release(self, request: Request) -> None: ...

    def step_latency(self, elapsed_s: float) -> float: ...

    def signals(self, request: Request) -> dict[str, int]: ...

    def cached_lengths(self, request: Request) -> dict[str, int]: ...


class ModelExecutor:
    """The real step: `run_step` over the model levels and the model-free drafters."""

    def __init__(self, levels: dict[str, ModelLevel], drafters: dict[str, ModelFreeDrafter]):
        self.levels = levels
        self.drafters = drafters

    @property
    def level_names(self) -> list[str]:
        return list(self.drafters) + list(self.levels)

    @property
    def model_free_names(self) -> Collection[str]:
        return self.drafters

    def run(self, batch: list[Request], decisions: list[Decision], ks: list[int]) -> list[RowResult]:
        return run_step(batch, decisions, self.levels, self.drafters, ks)

    def sync(self, request: Request, decision: Decision, k: int, result: RowResult, num_committed: int) -> None:
        for level in self.levels.values():
            level.sync(request)

    def release(self, request: Request) -> None:
        for level in self.levels.values():
            level.release(request)
        for drafter in self.drafters.values():
            drafter.finish(request.request_id, request.output_token_ids)

    def step_latency(self, elapsed_s: float) -> float:
        return elapsed_s

    def signals(self, request: Request) -> dict[str, int]:
        tokens = request.all_token_ids
        return {name: drafter.signal(request.request_id, tokens) for name, drafter in self.drafters.items()}

    def cached_lengths(self, request: Request) -> dict[str, int]:
        return {name: level.committed_length(request) for name, level in self.levels.items()}
