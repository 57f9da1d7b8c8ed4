"""The engine: add_request / abort / step, shared by the CLI, the environment and the server.

`step()` is the whole story: admit -> route -> speculate (draft, verify level by level) ->
commit -> roll every level back to what was committed -> observe.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from engine.config import EngineConfig
from engine.decision import TARGET, Decision, StaticRouter
from engine.drafters import MODEL_FREE_DRAFTERS, ModelFreeDrafter, NgramDrafter, SuffixDrafter
from engine.levels import ModelLevel
from engine.precision import prepare_model, resolve_precision
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
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
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
        eos = set()
        for source in (getattr(target.generation_config, "eos_token_id", None), target.config.eos_token_id,
                       getattr(tokenizer, "eos_token_id", None)):
            if source is not None:
                eos.update(source if isinstance(source, (list, tuple)) else [source])
        from engine.scheduler import Scheduler
        self.scheduler = Scheduler(self.config, eos, self._detokenize if tokenizer is not None else None)
        self.router = router or StaticRouter(Decision())
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
        known = set(self.level_names)
        for name in decision.chain:
            if name not in known:
                raise ValueError(f"unknown drafter {name!r}; available: {', '.join(sorted(known))}")
        for name in decision.chain[1:]:
            if name in self.drafters:
                raise ValueError(f"model-free drafter {name!r} cannot verify; it may only start a chain")

    def encode_prompt(self, prompt: str | list[int] | list[dict]) -> list[int]:
        """Text, token ids, or chat messages (rendered with the tokenizer's chat template)."""
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
            if self.tokenizer is None:
                raise ValueError("chat messages need a tokenizer")
            encoded = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
            ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
        elif isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("text prompts need a tokenizer")
            ids = self.tokenizer.encode(prompt, add_special_tokens=False) if prompt else []
        else:
            ids = list(prompt)
        if not ids:
            raise ValueError("prompt is empty")
        vocab = self.levels[TARGET].runner.vocab_size
        if any(not isinstance(t, int) or not 0 <= t < vocab for t in ids):
            raise ValueError(f"prompt token ids must be integers in [0, {vocab})")
        if len(ids) >= self.config.max_model_len:
            raise ValueError(f"prompt is longer than the context: {len(ids)} tokens, "
                             f"max_model_len is {self.config.max_model_len}")
        return ids

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

    def abort(self, request_id: str) -> bool:
        """Stop a request and free its KV at every level at once; False if it is unknown."""
        request = self.scheduler.requests.get(request_id)
        if request is None:
            return False
        self.scheduler.finish(request, FinishReason.ABORT)
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

    # ---- the step -------------------------------------------------------------------------
    def _decisions(self, batch: list[Request]) -> list[Decision]:
        """One decision per row; validity is checked per row by `_fail_invalid`."""
        chosen = self.router.decide(self)
        decisions = list(chosen) if isinstance(chosen, (list, tuple)) else [chosen] * len(batch)
        if len(decisions) != len(batch):
            raise ValueError(f"the router returned {len(decisions)} decisions for a batch of {len(batch)}")
        return decisions

    def _fail_invalid(self, batch: list[Request], decisions: list
                      ) -> tuple[list[Request], list[Decision], list[RequestOutput]]:
        """Rows whose decision cannot run finish alone with FinishReason.ERROR and the reason;
        the rest of the batch goes on. Returns the rows that run, their decisions, the failures."""
        reasons: dict[Decision, str | None] = {}
        for decision in decisions:
            if isinstance(decision, Decision) and decision not in reasons:
                try:
                    self.validate_decision(decision)
                    reasons[decision] = None
                except ValueError as exc:
                    reasons[decision] = str(exc)
        keep, kept, failed = [], [], []
        for request, decision in zip(batch, decisions):
            reason = (reasons[decision] if isinstance(decision, Decision)
                      else f"the router returned {decision!r}, not a Decision")
            if reason is None:
                keep.append(request)
                kept.append(decision)
                continue
            self.scheduler.finish(request, FinishReason.ERROR, error=f"invalid routing decision: {reason}")
            failed.append(self._output(request, []))
            self._release(request)
            self.trackers.forget_request(request.request_id)
        return keep, kept, failed

    def _draft_length(self, request: Request, decision: Decision) -> int:
        """K capped so that no level runs past the context or past max_tokens.

        Every verifying level adds one token, so a chain of n levels outputs up to K + n - 1
        tokens and the target feeds up to K + n - 2 proposals after the last committed token.
        """
        if decision.is_plain:
            return 0
        extra = len(decision.chain) - 2
        remaining = request.params.max_tokens - len(request.output_token_ids) - 1 - extra
        room = self.config.max_model_len - request.num_tokens - extra
        return max(0, min(decision.k, remaining, room))

    def step(self) -> list[RequestOutput]:
        start = time.perf_counter()
        batch = self.scheduler.admit()
        if not batch:
            self.last_step = StepRecord()
            return []
        batch, decisions, outputs = self._fail_invalid(batch, self._decisions(batch))
        if not batch:
            self.last_step = StepRecord(latency_s=time.perf_counter() - start)
            return outputs
        ks = [self._draft_length(r, d) for r, d in zip(batch, decisions)]
        results = run_step(batch, decisions, self.levels, self.drafters, ks)
        now = time.monotonic()
        num_committed = 0
        for request, decision, k, result in zip(batch, decisions, ks, results):
            appended = self.scheduler.commit(request, result.tokens, now)
            num_committed += len(appended)
            request.stats.observe_step(result.num_proposed, min(result.num_accepted, len(appended)))
            result.shadow_pairs = self.shadow.observe(request, decision.chain if k > 0 else (), self.drafters)
            for level in self.levels.values():
                level.sync(request)
            outputs.append(self._output(request, appended))
            if request.is_finished:
                self._release(request)
        self.last_step = StepRecord(decisions, results, [r.request_id for r in batch], num_committed,
                                    time.perf_counter() - start, len(batch))
        self.trackers.observe_step(self.last_step)
        for output in outputs:
            if output.finished:
                self.trackers.forget_request(output.request_id)
        return outputs

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
