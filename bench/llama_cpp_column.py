"""llama.cpp columns run in a child process, so that a llama.cpp build that crashes (seen on AMX
CPUs built natively: a segfault in `llama_decode`) costs its columns and a printed reason, not
the benchmark.

The child loads one `Llama` per variant on the same GGUF: `plain`, and prompt lookup
(`LlamaPromptLookupDecoding`, llama.cpp's n-gram drafting from the prompt) at each requested
number of draft tokens. It times each generation itself (prefill included), so the pipe costs
nothing that is measured.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

from bench.engine_columns import Generation


class ColumnFailed(RuntimeError):
    """The column cannot run any more (its process died): the benchmark drops it with this reason."""


def _serve(conn, gguf: str, num_threads: int, n_ctx: int, lookups: tuple[int, ...]) -> None:
    from llama_cpp import Llama
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    def load(draft=None):
        # with a draft model llama-cpp-python 0.3.36 keeps logits of every position but sizes its
        # score buffer by the `logits_all` argument: a prompt over n_batch tokens then fails to fit
        return Llama(model_path=gguf, n_threads=num_threads, n_threads_batch=num_threads, n_ctx=n_ctx,
                     n_batch=512, verbose=False, seed=0, draft_model=draft, logits_all=draft is not None)

    models = {"plain": load()}
    for k in lookups:
        models[f"lookup{k}"] = load(LlamaPromptLookupDecoding(num_pred_tokens=k))
    eos = {models["plain"].token_eos()}
    conn.send("ready")
    while True:
        message = conn.recv()
        if message is None:
            return
        variant, ids, max_new_tokens, eos_ids = message
        try:
            conn.send(_generate(models[variant], ids, max_new_tokens, eos | eos_ids))
        except Exception as exc:                 # this variant's failure, not the other columns'
            conn.send(("error", f"{type(exc).__name__}: {str(exc)[:300]}"))


def _generate(llm, ids: list[int], max_new_tokens: int, eos: set[int]) -> tuple[list[int], float]:
    """Greedy tokens and the seconds they took, prefill included."""
    llm.reset()
    tokens: list[int] = []
    start = time.perf_counter()
    for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
        if token in eos:
            break
        tokens.append(token)
        if len(tokens) >= max_new_tokens:
            break
    return tokens, time.perf_counter() - start


class LlamaCppProcess:
    """The child holding every llama.cpp variant; `column(variant)` is a bench column."""

    def __init__(self, gguf: Path, num_threads: int, n_ctx: int, eos_ids: set[int], lookups: tuple[int, ...] = ()):
        context = mp.get_context("spawn")
        self.conn, child = context.Pipe()
        self.eos_ids = eos_ids
        self.process = context.Process(target=_serve, args=(child, str(gguf), num_threads, n_ctx, tuple(lookups)),
                                       daemon=True)
        self.process.start()
        child.close()                            # the child holds its end: its death is then an EOF here
        self.failure = ""
        self.variant_failures: dict[str, str] = {}
        self._receive()                          # "ready", or the reason it died while loading
        self.variants = ["plain", *[f"lookup{k}" for k in lookups]]

    def _receive(self):
        if self.failure:
            raise ColumnFailed(self.failure)
        try:
            return self.conn.recv()
        except (EOFError, ConnectionError, OSError):
            self.process.join(timeout=5)
            code = self.process.exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            self.failure = f"the llama.cpp child process died ({how})"
            raise ColumnFailed(self.failure) from None

    def generate(self, variant: str, ids: list[int], max_new_tokens: int) -> Generation:
        if self.failure or variant in self.variant_failures:
            raise ColumnFailed(self.failure or self.variant_failures[variant])
        self.conn.send((variant, list(ids), max_new_tokens, self.eos_ids))
        reply = self._receive()
        if reply[0] == "error":                  # the child lives on; this variant is dropped
            self.variant_failures[variant] = f"llama.cpp {variant} raised {reply[1]}"
            raise ColumnFailed(self.variant_failures[variant])
        tokens, elapsed = reply
        return Generation(tokens, elapsed, num_steps=len(tokens))

    def column(self, variant: str):
        return lambda ids, max_new_tokens: self.generate(variant, ids, max_new_tokens)

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(timeout=10)


def build_llama_cpp(cfg, loaded, n_ctx: int) -> tuple[dict, str | None]:
    """bench_chains' baseline (`cfg` a ChainsBenchArgs, `loaded` the LoadedModel): ({"llama.cpp":
    column} or {}, why it is absent), llama.cpp plain on the embedded model's GGUF."""
    from bench.chains_report import LLAMA_CPP
    from bench.engine_columns import llama_cpp_missing_reason
    from engine.models import fetch_embedded_gguf

    if not cfg.llama_cpp:
        return {}, "--no-llama-cpp"
    reason = llama_cpp_missing_reason()
    gguf = fetch_embedded_gguf() if cfg.model == "default" else Path(cfg.model)
    if reason is None and gguf.suffix != ".gguf":
        reason = f"{gguf} is not a GGUF file"
    if reason is not None:
        print(f"skipping {LLAMA_CPP}: {reason}", flush=True)
        return {}, reason
    eos = {t for t in (loaded.tokenizer.eos_token_id, loaded.model.config.eos_token_id) if t is not None}
    return {LLAMA_CPP: LlamaCppProcess(gguf, cfg.num_threads or 2, n_ctx, eos).column("plain")}, None
