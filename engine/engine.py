"""The engine: add_request / abort / step, shared by the CLI, the environment and the server.

`step()` is the whole story: admit -> route -> speculate (draft, verify level by level) ->
commit -> roll every level back to what was committed -> observe. Routers see a read-only
`BatchView` (engine/batch_view.py); a caller may pass the step's decisions instead.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from engine.batch_view import BatchView, Router
from engine.config import EngineConfig
from engine.decision import (TARGET, Decision, StaticRouter, capped_draft_length, invalid_reasons, per_row,
                             validate_decision)
from engine.drafters import MODEL_FREE_DRAFTERS, ModelFreeDrafter, NgramDrafter, SuffixDrafter
from engine.levels import ModelLevel
from engine.precision import prepare_model, resolve_precision
from engine.prompts import encode_prompt, eos_token_ids
from engine.runner import ModelRunner
from engine.sampling import SamplingParams
from engine.sequence import FinishReason, Request, RequestOutput
from engine.shadow_drafts import ShadowDrafts
from engine.spec_step import RowResult, run_step
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


class Engine:
    """Casts its models to the resolved precision in place; with `release_model_weights` each
    decoder matrix then lives only in its kernel's layout."""

    def __init__(self, target: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None,
                 config: EngineConfig | None = None, drafts: dict[str, PreTrainedModel] | None = None,
                 router=None):
        self.config = config or EngineConfig()
        self.tokenizer = tokenizer
        cfg = self.config
        self.precision = resolve_precision(cfg.dtype, cfg.kernel, cfg.weights, cfg.device)

        def runner(model: PreTrainedModel) -> ModelRunner:
            prepare_model(model, self.precision)
            return ModelRunner(model, cfg.max_model_len, self.precision.kernel, self.precision.weights,
                               release_weights=cfg.release_model_weights)

        def level(name: str, model: PreTrainedModel) -> ModelLevel:
            return ModelLevel(name, runner(model), cfg.catch_up_threshold, cfg.token_budget)

        self.levels: dict[str, ModelLevel] = {TARGET: level(TARGET, target)}
        for fmt in cfg.quantized_formats:        # the target's own model, quantized matrices and head
            quantized = ModelRunner(target, cfg.max_model_len, self.precision.kernel, fmt,
                                    release_weights=cfg.release_model_weights, head_weights=fmt)
            self.levels[fmt] = ModelLevel(fmt, quantized, cfg.catch_up_threshold, cfg.token_budget)
        for name, model in (drafts or {}).items():
            if name in self.levels or name in MODEL_FREE_DRAFTERS:
                raise ValueError(f"draft name {name!r} is reserved")
            if model.config.vocab_size != target.config.vocab_size:
                raise ValueError(f"draft {name!r} has vocabulary {model.config.vocab_size}, "
                                 f"the target {target.config.vocab_size}: they must share a tokenizer")
            self.levels[name] = level(name, model)
        self.drafters: dict[str, ModelFreeDrafter] = {
            NgramDrafter.name: NgramDrafter(self.config.ngram_max_match, self.config.ngram_min_match),
            SuffixDrafter.name: SuffixDrafter(self.config.suffix_max_match, max_history=self.config.suffix_max_history),
        }
        self.shadow = ShadowDrafts(self.config.shadow_draft_length)
        from engine.scheduler import Scheduler
        self.scheduler = Scheduler(self.config, eos_token_ids(target, tokenizer),
                                   self._detokenize if tokenizer is not None else None)
        self.router: Router = router or StaticRouter(Decision())
        self.clock: Callable[[], float] = time.monotonic
        self.last_step = StepRecord()
        self._ids = itertools.count()
        self.trackers = AcceptanceTrackers()
        self.profile = None     # engine.profile.LatencyProfile | None; see load_or_measure_profile

    def load_or_measure_profile(self, path, **measure_kwargs):
        """Set `self.profile` from `path`, measuring (and saving) the levels it lacks."""
        from engine.profile import load_or_measure
        self.profile = load_or_measure(self, path, **measure_kwargs)
        return self.profile

    # ---- requests -------------------------------------------------------------------------
    @property
    def level_names(self) -> list[str]:
        return list(self.drafters) + list(self.levels)

    def validate_decision(self, decision: Decision) -> None:
        """Raise ValueError unless this engine can run `decision`."""
        validate_decision(decision, self.level_names, self.drafters)

    def encode_prompt(self, prompt: str | list[int] | list[dict]) -> list[int]:
        """Text, token ids, or chat messages (rendered with the tokenizer's chat template)."""
        return encode_prompt(prompt, self.tokenizer, self.levels[TARGET].runner.vocab_size, self.config.max_model_len)

    def add_request(self, prompt: str | list[int] | list[dict], params: SamplingParams | None = None,
                    request_id: str | None = None, category: str = "", arrival_time: float | None = None) -> str:
        """Queue a request; bad input raises ValueError and leaves the engine unchanged."""
        params = params or SamplingParams()
        ids = self.encode_prompt(prompt)
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
        if request_id in self.scheduler.requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        request = Request(request_id, ids, params, category=category)
        if arrival_time is not None:
            request.arrival_time = arrival_time
        self.scheduler.add(request)
        return request_id

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

    def _release(self, request: Request) -> None:
        for level in self.levels.values():
            level.release(request)
        for drafter in self.drafters.values():
            drafter.finish(request.request_id, request.output_token_ids)
        self.shadow.forget(request.request_id)
        self.scheduler.pop_finished(request)

    @property
    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished

    # ---- what routers and callers see and set ----------------------------------------------
    def view(self) -> BatchView:
        """The running batch (as the last admission left it), the queue, the trackers' snapshot."""
        return BatchView.of(self.scheduler.running, self.scheduler.waiting, self.trackers.snapshot(),
                            self.profile, self.config.max_model_len)

    def set_router(self, router: Router) -> None:
        """The router `step()` asks when it is given no decisions."""
        self.router = router

    def set_profile(self, profile) -> None:
        """The latency profile routers read (`engine.profile.LatencyProfile`)."""
        self.profile = profile

    def set_acceptance_priors(self, priors: Mapping[str, float]) -> None:
        """Start the trackers' pairs from these acceptances ("drafter>verifier" -> a), e.g. fitted ones."""
        self.trackers.priors.update(priors)

    def use_clock(self, clock: Callable[[], float]) -> None:
        """The clock of step latencies and of first-token and finish times (default time.monotonic)."""
        self.clock = clock

    def add_drafter(self, drafter: ModelFreeDrafter) -> None:
        """Make a model-free drafter available to chains under `drafter.name`."""
        if drafter.name in self.levels:
            raise ValueError(f"drafter name {drafter.name!r} is a model level's")
        self.drafters[drafter.name] = drafter

    def forget_drafter_history(self) -> None:
        """A fresh suffix drafter: its history of earlier outputs would leak one run into the next."""
        self.drafters[SuffixDrafter.name] = SuffixDrafter(self.config.suffix_max_match,
                                                          max_history=self.config.suffix_max_history)

    def adaptive_state(self) -> tuple[dict[str, ModelFreeDrafter], AcceptanceTrackers]:
        """What the engine learns as it runs: the model-free drafters (history) and the trackers."""
        return self.drafters, self.trackers

    def load_adaptive_state(self, state: tuple[dict[str, ModelFreeDrafter], AcceptanceTrackers]) -> None:
        """Install drafters and trackers from `adaptive_state()` (benchmarks keep one per column)."""
        self.drafters, self.trackers = state

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
        results = run_step(batch, decisions, self.levels, self.drafters, ks)
        now = self.clock()
        num_committed = 0
        for request, decision, k, result in zip(batch, decisions, ks, results):
            appended = self._commit(request, decision.chain if k > 0 else (), result, now)
            num_committed += len(appended)
            outputs.append(self._output(request, appended))
            if request.is_finished:
                self._release(request)
        self.last_step = StepRecord(decisions, results, [r.request_id for r in batch], num_committed,
                                    self.clock() - start, len(batch))
        self.trackers.observe_step(self.last_step)
        for output in outputs:
            if output.finished:
                self.trackers.forget_request(output.request_id)
        return outputs

    def admit(self) -> BatchView:
        """Admit waiting requests that fit; the view of the batch the next `step()` runs."""
        self.scheduler.admit()
        return self.view()

    def _ask_router(self, num_rows: int) -> list:
        """The router's decisions for the running batch, one per row; not yet validated."""
        return per_row(self.router.decide(self.view()), num_rows)

    def _route(self, batch: list[Request], decisions) -> tuple[list[Request], list[Decision], list[RequestOutput]]:
        if not batch:
            return [], [], []
        decisions = self._ask_router(len(batch)) if decisions is None else per_row(decisions, len(batch))
        return self._fail_invalid(batch, decisions)

    def _fail_invalid(self, batch: list[Request], decisions: list
                      ) -> tuple[list[Request], list[Decision], list[RequestOutput]]:
        """Rows whose decision cannot run finish alone with FinishReason.ERROR and the reason;
        the rest of the batch goes on. Returns the rows that run, their decisions, the failures."""
        keep, kept, failed = [], [], []
        for request, decision, reason in zip(batch, decisions,
                                             invalid_reasons(decisions, self.level_names, self.drafters)):
            if reason is None:
                keep.append(request)
                kept.append(decision)
                continue
            self.scheduler.finish(request, FinishReason.ERROR, self.clock(), f"invalid routing decision: {reason}")
            failed.append(self._output(request, []))
            self._release(request)
            self.trackers.forget_request(request.request_id)
        return keep, kept, failed

    def draft_length(self, request: Request, decision: Decision) -> int:
        """K capped so that no level runs past the context or past max_tokens (`capped_draft_length`)."""
        return capped_draft_length(request, decision, self.config.max_model_len)

    def _commit(self, request: Request, chain: tuple[str, ...], result: RowResult, now: float) -> list[int]:
        """Commit the row's tokens, score its shadow proposals, roll every level back to the commit."""
        appended = self.scheduler.commit(request, result.tokens, now)
        request.stats.observe_step(result.num_proposed, min(result.num_accepted, len(appended)))
        result.shadow_pairs = self.shadow.observe(request, chain, self.drafters)
        for level in self.levels.values():
            level.sync(request)
        return appended

    # ---- after a failed step (the serving loop) ---------------------------------------------
    def drop_kv(self, requests: list[Request]) -> None:
        """Free the requests' slots at every level; the next forward re-prefills them (lazy catch-up)."""
        for request in requests:
            for level in self.levels.values():
                level.release(request)

    def isolate_failures(self) -> list[tuple[Request, str]]:
        """After a step raised: drop the running rows' KV, run each row's step alone (nothing is
        committed, its KV is dropped again), and return the rows that fail alone with why; every
        row when the router itself fails."""
        batch = list(self.scheduler.running)
        self.drop_kv(batch)
        try:
            decisions = self._ask_router(len(batch))
        except Exception as exc:        # the router itself failed: nothing row-specific to blame
            return [(r, f"routing failed: {exc!r}") for r in batch]
        failures = []
        for request, decision in zip(batch, decisions):
            try:
                run_step([request], [decision], self.levels, self.drafters, [self.draft_length(request, decision)])
            except Exception as exc:
                failures.append((request, f"{type(exc).__name__}: {exc}"))
            finally:
                self.drop_kv([request])
        return failures

    def _detokenize(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def _output(self, request: Request, appended: list[int]) -> RequestOutput:
        text = None
        if request.is_finished and self.tokenizer is not None:
            text = self._detokenize(request.output_token_ids)
            if request.stop_text_end is not None:
                text = text[: request.stop_text_end]
        return RequestOutput(request.request_id, appended, list(request.output_token_ids), request.is_finished,
                             request.finish_reason, request.stats, text, request.error)

    def generate(self, prompts: list, params: SamplingParams | None = None) -> list[RequestOutput]:
        """Run prompts to completion (offline use, tests, benchmarks); outputs in prompt order."""
        ids = [self.add_request(p, params) for p in prompts]
        final: dict[str, RequestOutput] = {}
        while self.has_unfinished:
            for output in self.step():
                if output.finished:
                    final[output.request_id] = output
        return [final[i] for i in ids]
