"""The engine over models: add_request / abort / step, shared by the CLI, the environment and the server.

The step itself is `engine.core.EngineCore.step` (route -> draft -> verify -> commit or roll
back -> observe) with a `ModelExecutor` over the model levels and the model-free drafters; this
class adds the models, prompts and what benchmarks and the server set on a live engine.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from engine.autotune import model_digest, resolve_engine_precision
from engine.build import DraftSpec, load_pretrained
from engine.config import EngineConfig
from engine.core import EngineCore, StepRecord
from engine.decision import TARGET
from engine.drafters import MODEL_FREE_DRAFTERS, ModelFreeDrafter, NgramDrafter, SuffixDrafter
from engine.eagle_head import is_eagle_head
from engine.eagle_level import EagleLevel
from engine.executor import ModelExecutor
from engine.levels import ModelLevel
from engine.models import LoadedModel
from engine.precision import prepare_model
from engine.prompts import encode_prompt, eos_token_ids
from engine.runner import ModelRunner
from engine.sampling import SamplingParams
from engine.scheduler import Scheduler
from engine.sequence import Request, RequestOutput
from engine.trackers import AcceptanceTrackers

__all__ = ["Engine", "StepRecord"]


class Engine(EngineCore):
    """Casts its models to the resolved precision in place; with `release_model_weights` each
    decoder matrix then lives only in its kernel's layout."""

    def __init__(self, target: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None,
                 config: EngineConfig | None = None, drafts: dict[str, PreTrainedModel] | None = None,
                 router=None):
        self.config = config or EngineConfig()
        self.tokenizer = tokenizer
        cfg = self.config
        # `auto`: the cached forward-path self-test on this machine and model (engine/autotune)
        self.precision, self.path_choice = resolve_engine_precision(target, cfg.dtype, cfg.kernel, cfg.weights,
                                                                    cfg.device)
        self.model_digest = model_digest(target)    # before the cast: the latency curve's cache keys on it

        drafts = drafts or {}
        # an EAGLE head reads the target's features: the target then keeps them (engine/eagle_level.py)
        needs_features = any(is_eagle_head(model) for model in drafts.values())

        def level(name: str, model: PreTrainedModel, weights: str = self.precision.weights,
                  head_weights: str = "dense") -> ModelLevel:
            prepare_model(model, self.precision)
            runner = ModelRunner(model, cfg.max_model_len, self.precision.kernel, weights,
                                 release_weights=cfg.release_model_weights, head_weights=head_weights,
                                 keep_features=needs_features and name == TARGET,
                                 invariant=name == TARGET and cfg.attention == "invariant")
            if is_eagle_head(model):
                return EagleLevel(name, runner, self.levels[TARGET], cfg.catch_up_threshold, cfg.token_budget)
            return ModelLevel(name, runner, cfg.catch_up_threshold, cfg.token_budget)

        self.levels: dict[str, ModelLevel] = {}
        self.levels[TARGET] = level(TARGET, target)
        for fmt in cfg.quantized_formats:        # the target's own model, quantized matrices and head
            self.levels[fmt] = level(fmt, target, weights=fmt, head_weights=fmt)
        for name, model in drafts.items():
            if name in self.levels or name in MODEL_FREE_DRAFTERS:
                raise ValueError(f"draft name {name!r} is reserved")
            if model.config.vocab_size != target.config.vocab_size:
                raise ValueError(f"draft {name!r} has vocabulary {model.config.vocab_size}, "
                                 f"the target {target.config.vocab_size}: they must share a tokenizer")
            self.levels[name] = level(name, model)
        drafters: dict[str, ModelFreeDrafter] = {
            NgramDrafter.name: NgramDrafter(self.config.ngram_max_match, self.config.ngram_min_match),
            SuffixDrafter.name: SuffixDrafter(self.config.suffix_max_match, max_history=self.config.suffix_max_history),
        }
        scheduler = Scheduler(cfg, eos_token_ids(target, tokenizer), self._detokenize if tokenizer is not None else None)
        super().__init__(cfg, ModelExecutor(self.levels, drafters), scheduler, router)    # levels shared with it
        self._ids = itertools.count()
        self.model_name = ""                        # from_pretrained: the LoadedModel's name (profiles key on it)
        self.draft_notes: dict[str, str] = {}       # from_pretrained: per DraftSpec, loaded or why not

    @classmethod
    def from_pretrained(cls, model: str | LoadedModel = "default", *, drafts: Sequence[DraftSpec] = (),
                        config: EngineConfig | None = None, router=None) -> Engine:
        """The engine every command builds: the target `model` ('default', a local HF directory or
        .gguf, or a LoadedModel in hand), the draft levels `drafts`, and the quantized copies and
        forward path (`auto`: the cached self-test) that `config` names.

        A required draft with nothing at its path raises MissingDraftError before the target is
        loaded; other load failures raise ModelLoadError (DraftMismatchError for a checkpoint made
        for another target) unless the spec skips them. `draft_notes` says per spec what happened.
        """
        pretrained = load_pretrained(model, drafts)
        engine = cls(pretrained.target.model, pretrained.target.tokenizer, config, drafts=pretrained.drafts,
                     router=router)
        engine.model_name, engine.draft_notes = pretrained.target.name, pretrained.notes
        return engine

    def load_or_measure_profile(self, path, **measure_kwargs):
        """Set `self.profile` from `path`, measuring (and saving) the levels it lacks."""
        from engine.profile import load_or_measure
        self.profile = load_or_measure(self, path, **measure_kwargs)
        return self.profile

    # ---- requests -------------------------------------------------------------------------
    @property
    def drafters(self) -> dict[str, ModelFreeDrafter]:
        return self.executor.drafters

    @property
    def level_names(self) -> list[str]:
        return self.executor.level_names

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

    # ---- drafters and what the engine learns as it runs ---------------------------------
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
        self.executor.drafters, self.trackers = state

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
                self.executor.run([request], [decision], [self.draft_length(request, decision)])
            except Exception as exc:
                failures.append((request, f"{type(exc).__name__}: {exc}"))
            finally:
                self.drop_kv([request])
        return failures

    def _detokenize(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def generate(self, prompts: list, params: SamplingParams | None = None) -> list[RequestOutput]:
        """Run prompts to completion (offline use, tests, benchmarks); outputs in prompt order."""
        ids = [self.add_request(p, params) for p in prompts]
        final: dict[str, RequestOutput] = {}
        while self.has_unfinished:
            for output in self.step():
                if output.finished:
                    final[output.request_id] = output
        return [final[i] for i in ids]
