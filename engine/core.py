"""The step shared by the real engine and the simulator: scheduling, routing, capping, commit,
shadow drafting, rollback bookkeeping and the trackers, around a `StepExecutor`.

`step()` is the whole story: admit -> route -> draft and verify (the executor) -> commit ->
roll every level back to what was committed -> observe. Routers see a read-only `BatchView`
(engine/batch_view.py); a caller may pass the step's decisions instead. `engine.Engine` runs it
over models; `env.sim_backend.SimEngine` over the simulator's executor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from engine.batch_view import BatchView, Router, StepFeedback
from engine.config import EngineConfig
from engine.decision import (Decision, StaticRouter, capped_draft_length, invalid_reasons, per_row,
                             validate_decision)
from engine.executor import StepExecutor
from engine.scheduler import Scheduler
from engine.sequence import FinishReason, Request, RequestOutput
from engine.shadow_drafts import ShadowDrafts
from engine.spec_step import RowResult
from engine.trackers import AcceptanceTrackers


@dataclass
class StepRecord:
    """What one step did, for trackers, metrics and the environment's reward."""

    decisions: list[Decision] = field(default_factory=list)
    results: list[RowResult] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    num_committed: int = 0
    latency_s: float = 0.0
    batch_size: int = 0


class EngineCore:
    """Args:
        config: batching limits, context length, shadow draft length.
        executor: runs the speculative part of each step (`engine.executor`).
        scheduler: owns the requests' state.
        router: asked for the step's decisions when the caller passes none.
    """

    def __init__(self, config: EngineConfig, executor: StepExecutor, scheduler: Scheduler, router: Router | None = None):
        self.config = config
        self.executor = executor
        self.scheduler = scheduler
        self.router: Router = router or StaticRouter(Decision())
        self.trackers = AcceptanceTrackers()
        self.shadow = ShadowDrafts(config.shadow_draft_length)
        self.clock: Callable[[], float] = time.monotonic
        self.last_step = StepRecord()
        self.profile = None     # engine.profile.LatencyProfile | None, for routers
        self.shows_signals = False

    # ---- what routers and callers see and set ----------------------------------------------
    @property
    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished

    def view(self) -> BatchView:
        """The running batch (as the last admission left it) with what each model level's cache
        holds per row, the queue, the trackers' snapshot, and each row's draft signals when
        `show_signals` asked for them."""
        running = self.scheduler.running
        signals = [self.executor.signals(r) for r in running] if self.shows_signals else None
        return BatchView.of(running, self.scheduler.waiting, self.trackers.snapshot(),
                            self.profile, self.config.max_model_len, signals,
                            [self.executor.cached_lengths(r) for r in running])

    def show_signals(self, on: bool = True) -> None:
        """Put each row's per-step draft signals (`StepExecutor.signals`) in its view: a router
        that reads them (the learned policy) turns this on; it costs each drafter a lookup per row."""
        self.shows_signals = on

    def admit(self) -> BatchView:
        """Admit waiting requests that fit; the view of the batch the next `step()` runs."""
        self.scheduler.admit()
        return self.view()

    def set_router(self, router: Router) -> None:
        """The router `step()` asks when it is given no decisions."""
        self.router = router

    def set_profile(self, profile) -> None:
        """The latency profile routers read (`engine.profile.LatencyProfile`)."""
        self.profile = profile

    def set_acceptance_priors(self, priors: Mapping[str, float], confidence: Mapping[str, dict] | None = None) -> None:
        """Start the trackers' pairs from these acceptances ("drafter>verifier" -> a), e.g. fitted
        ones, and from these draft-confidence histograms (`AcceptanceModel.confidence_histograms`)."""
        self.trackers.priors.update(priors)
        self.trackers.confidence_priors.update(confidence or {})

    def use_clock(self, clock: Callable[[], float]) -> None:
        """The clock of step latencies and of first-token and finish times (default time.monotonic)."""
        self.clock = clock

    def validate_decision(self, decision: Decision) -> None:
        """Raise ValueError unless this engine can run `decision`."""
        validate_decision(decision, self.executor.level_names, self.executor.model_free_names)

    def draft_length(self, request: Request, decision: Decision) -> int:
        """K capped so that no level runs past the context or past max_tokens (`capped_draft_length`)."""
        return capped_draft_length(request, decision, self.config.max_model_len)

    def abort(self, request_id: str, error: str | None = None) -> bool:
        """Stop a request and free its KV at every level at once; False if it is unknown. With
        an `error` it finishes with FinishReason.ERROR and that message (a row that failed alone)."""
        request = self.scheduler.requests.get(request_id)
        if request is None:
            return False
        self.scheduler.finish(request, FinishReason.ERROR if error else FinishReason.ABORT, self.clock(), error)
        self._release(request)
        self.trackers.forget_request(request_id)
        return True

    # ---- the step -------------------------------------------------------------------------
    def step(self, decisions: Decision | Sequence[Decision] | None = None) -> list[RequestOutput]:
        """One step of the running batch: route -> draft -> verify -> commit or roll back -> observe.

        `decisions`: one per row of the batch the step admits (`admit()` then `view().rows`),
        one Decision for every row, or None to ask the router."""
        start = self.clock()
        batch, decisions, outputs = self._route(self.scheduler.admit(), decisions)
        if not batch:
            self.last_step = StepRecord(latency_s=self.clock() - start if outputs else 0.0)
            return outputs
        ks = [self.draft_length(r, d) for r, d in zip(batch, decisions)]
        results = self.executor.run(batch, decisions, ks)
        now = self.clock()
        committed = []
        for request, decision, k, result in zip(batch, decisions, ks, results):
            appended = self._commit(request, decision, k, result, now)
            committed.append(len(appended))
            outputs.append(self._output(request, appended))
            if request.is_finished:
                self._release(request)
        latency_s = self.executor.step_latency(self.clock() - start)
        self.last_step = StepRecord(decisions, results, [r.request_id for r in batch], sum(committed),
                                    latency_s, len(batch))
        self.trackers.observe_step(self.last_step)
        if (observe := getattr(self.router, "observe_feedback", None)) is not None:
            observe(StepFeedback(tuple(decisions), latency_s, tuple(committed)))
        for output in outputs:
            if output.finished:
                self.trackers.forget_request(output.request_id)
        return outputs

    def _ask_router(self, num_rows: int) -> list:
        """The router's decisions for the running batch, one per row; not yet validated."""
        return per_row(self.router.decide(self.view()), num_rows)

    def _route(self, batch: list[Request], decisions) -> tuple[list[Request], list[Decision], list[RequestOutput]]:
        """One decision per row; rows whose decision cannot run finish alone with
        FinishReason.ERROR and the reason, the rest of the batch goes on. Returns the rows that
        run, their decisions, the failures' outputs."""
        if not batch:
            return [], [], []
        decisions = self._ask_router(len(batch)) if decisions is None else per_row(decisions, len(batch))
        keep, kept, failed = [], [], []
        reasons = invalid_reasons(decisions, self.executor.level_names, self.executor.model_free_names)
        for request, decision, reason in zip(batch, decisions, reasons):
            if reason is None:
                keep.append(request)
                kept.append(decision)
                continue
            self.scheduler.finish(request, FinishReason.ERROR, self.clock(), f"invalid routing decision: {reason}")
            failed.append(self._output(request, []))
            self._release(request)
            self.trackers.forget_request(request.request_id)
        return keep, kept, failed

    def _commit(self, request: Request, decision: Decision, k: int, result: RowResult, now: float) -> list[int]:
        """Commit the row's tokens, score its shadow proposals, roll every level back to the commit."""
        appended = self.scheduler.commit(request, result.tokens, now, result.logprobs)
        request.stats.observe_step(result.num_proposed, min(result.num_accepted, len(appended)))
        result.shadow_pairs = self.shadow.observe(request, decision.chain if k > 0 else (), self.executor.drafters)
        self.executor.sync(request, decision, k, result, len(appended))
        return appended

    def _release(self, request: Request) -> None:
        self.executor.release(request)
        self.shadow.forget(request.request_id)
        self.scheduler.pop_finished(request)

    def _output(self, request: Request, appended: list[int]) -> RequestOutput:
        text = None
        if request.is_finished and self.scheduler.detokenize is not None:
            text = self.scheduler.detokenize(request.output_token_ids)
            if request.stop_text_end is not None:
                text = text[: request.stop_text_end]
        output = RequestOutput(request.request_id, appended, list(request.output_token_ids), request.is_finished,
                               request.finish_reason, request.stats, text, request.error)
        if request.output_logprobs is not None:
            output.logprobs = list(request.output_logprobs)
            output.new_logprobs = output.logprobs[len(output.logprobs) - len(appended):]
        return output
