"""The generators bench_engine compares, one per column: llama.cpp, transformers, our engine.

Each column is a callable `(prompt ids, max new tokens) -> Generation`, greedy, timed from the
prompt's arrival (prefill included) to the last token, so every figure is end-to-end tok/s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from engine import Engine, SamplingParams, StaticRouter
from engine.decision import Decision


@dataclass
class Generation:
    tokens: list[int]
    elapsed_s: float
    num_steps: int = 0                 # target forwards (0 where the column does not say)
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    forward_s: float = 0.0             # time inside the target's forward (ours only)


def llama_cpp_missing_reason() -> str | None:
    """Why the llama.cpp column cannot run, or None when it can."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        return (f"llama-cpp-python is not installed ({exc}); install the bench extra: "
                "pip install -e '.[bench]' (builds llama.cpp from source, ~10 minutes on 2 cores)")
    return None


class HFColumn:
    """transformers `generate`, greedy, in the model's dtype."""

    def __init__(self, model, eos_ids: set[int]):
        self.model = model
        self.eos_ids = eos_ids

    def __call__(self, ids: list[int], max_new_tokens: int) -> Generation:
        prompt = torch.tensor([ids])
        start = time.perf_counter()
        with torch.inference_mode():
            output = self.model.generate(prompt, do_sample=False, max_new_tokens=max_new_tokens,
                                         attention_mask=torch.ones_like(prompt),
                                         pad_token_id=min(self.eos_ids), eos_token_id=sorted(self.eos_ids))
        tokens = [t for t in output[0, len(ids):].tolist()]
        while tokens and tokens[-1] in self.eos_ids:
            tokens.pop()
        return Generation(tokens, time.perf_counter() - start, num_steps=len(tokens))


class ForwardTimer:
    """Time spent inside one runner's forward, to split a step into model forward and the rest."""

    def __init__(self, runner) -> None:
        self.total_s = 0.0
        self.inner = runner.forward

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self.inner(*args, **kwargs)
            finally:
                self.total_s += time.perf_counter() - start
        runner.forward = timed


class EngineColumn:
    """Our engine with a fixed chain/K, or with a router (the served one: see `served_router`)."""

    def __init__(self, engine: Engine, timer: ForwardTimer, decision: Decision | None = None, state=None):
        self.engine = engine
        self.timer = timer                      # the engine's target forward timer, shared by its columns
        self.decision = decision
        self.state = state                      # serving.launch.ServingState when a router drives

    def _notify(self, event: str, *args) -> None:
        for observer in (self.state.engine_loop.observers if self.state is not None else ()):
            method = getattr(observer, event, None)
            if method is not None:
                method(*args)

    def __call__(self, ids: list[int], max_new_tokens: int) -> Generation:
        engine = self.engine
        engine.set_router(self.state.router if self.state is not None else StaticRouter(self.decision))
        forward_before = self.timer.total_s
        start = time.perf_counter()
        request_id = engine.add_request(ids, SamplingParams(max_tokens=max_new_tokens))
        self._notify("observe_added", engine.scheduler.requests[request_id])
        final = None
        while engine.has_unfinished:
            outputs = engine.step()
            self._notify("observe_step", engine, outputs)
            final = next((o for o in outputs if o.finished), final)
        self._notify("observe_removed", request_id)
        elapsed = time.perf_counter() - start
        stats = final.stats
        return Generation(list(final.output_token_ids), elapsed, stats.num_steps, stats.num_draft_tokens,
                          stats.num_accepted_tokens, self.timer.total_s - forward_before)


def served_router(engine: Engine, router: str, model_name: str, policy: str = "checkpoints/router"):
    """The server's router (`learned` with the cost-model fallback, or `cost-model`) on `engine`."""
    from serving.config import ServerConfig
    from serving.launch import state_for_engine
    config = ServerConfig(router=router, policy=policy if router == "learned" else "", decision_log="")
    return state_for_engine(engine, config, model_name)
