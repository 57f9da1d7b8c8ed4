"""The one engine loop: a thread that owns the Engine, steps it, and hands tokens to asyncio.

The engine is not thread-safe, so nothing but this thread touches it. Requests and aborts
arrive as commands on a queue and are applied between steps (continuous batching: a request
joins the running batch at the next step). Each request's outputs go to its `RequestStream`,
an asyncio queue the HTTP handler reads, via `loop.call_soon_threadsafe`.

A step that raises does not stop the loop: every row of the failed batch has its KV dropped
(the next forward re-prefills it from its committed tokens, so no half-written state is
read), each row is tried alone, the rows that fail alone finish with an error, and the rest
go on. Rows that only fail together are all failed after `MAX_CONSECUTIVE_FAILURES`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from engine import TARGET, Engine, FinishReason, RequestOutput, SamplingParams

logger = logging.getLogger("serving")

MAX_CONSECUTIVE_FAILURES = 3


@dataclass
class StreamEnd:
    """Sentinel put on a stream when the request ends without a final engine output."""

    reason: FinishReason
    error: str | None = None


@dataclass(frozen=True)
class EngineSnapshot:
    """What the HTTP side may read of the engine: the engine thread publishes a new one after
    each step and each batch of commands (the engine itself is never read from another thread)."""

    num_running: int = 0
    num_waiting: int = 0
    kv_free_slots: tuple[tuple[str, int], ...] = ()     # (level, free KV slots)
    kv_bytes: tuple[tuple[str, int], ...] = ()          # (level, bytes its KV cache holds)
    kv_usage: float = 0.0       # tokens the target's KV cache holds / the batch's token budget (max_num_tokens)

    @classmethod
    def of(cls, engine: Engine) -> EngineSnapshot:
        used = sum(engine.levels[TARGET].cache.lengths)
        return cls(len(engine.scheduler.running), len(engine.scheduler.waiting),
                   tuple((name, level.cache.num_free_slots) for name, level in engine.levels.items()),
                   tuple((name, level.cache.nbytes()) for name, level in engine.levels.items()),
                   min(1.0, used / engine.config.max_num_tokens))


class RequestStream:
    """Outputs of one engine request, in order, on the event loop that submitted it."""

    def __init__(self, request_id: str, loop: asyncio.AbstractEventLoop, num_prompt_tokens: int):
        self.request_id = request_id
        self.loop = loop
        self.num_prompt_tokens = num_prompt_tokens
        self.queue: asyncio.Queue[RequestOutput | StreamEnd] = asyncio.Queue()
        self.is_finished = False

    def deliver(self, item: RequestOutput | StreamEnd) -> None:
        """Called from the engine thread."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:        # the event loop is closed: nobody is listening any more
            pass

    async def next(self) -> RequestOutput | StreamEnd:
        item = await self.queue.get()
        if isinstance(item, StreamEnd) or item.finished:
            self.is_finished = True
        return item


class EngineLoop:
    """Owns `engine` on a background thread; `submit` / `abort` from asyncio.

    Args:
        engine: the engine (its router is consulted inside `engine.step()`).
        observers: objects told, on the engine thread, what happens: each may define
            `observe_added(request)`, `observe_removed(request_id)`, `observe_step(engine, outputs)` (after every step
            that ran a batch) and `observe_failed_step()`. Their exceptions are logged, never fatal.
    """

    def __init__(self, engine: Engine, observers: Sequence[object] = (), idle_wait_s: float = 0.05):
        self.engine = engine
        self.observers = list(observers)
        self.idle_wait_s = idle_wait_s
        self._commands: collections.deque[tuple] = collections.deque()
        self._wake = threading.Event()
        self._streams: dict[str, RequestStream] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._consecutive_failures = 0
        self.num_steps = 0
        self.num_failed_steps = 0
        self.snapshot = EngineSnapshot.of(engine)      # replaced whole by the engine thread, read anywhere

    # ---- asyncio side ---------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
            self._thread.start()

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def num_in_flight(self) -> int:
        """Requests submitted and not yet finished (queued, waiting or running)."""
        return len(self._streams)

    def submit(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> RequestStream:
        """Queue a request for the engine; its outputs arrive on the returned stream."""
        stream = RequestStream(request_id, asyncio.get_running_loop(), len(prompt_token_ids))
        with self._lock:
            if request_id in self._streams:
                raise ValueError(f"request id {request_id!r} is already in flight")
            self._streams[request_id] = stream
        self._commands.append(("add", request_id, prompt_token_ids, params, time.monotonic()))
        self._wake.set()
        return stream

    def abort(self, request_id: str, reason: str | None = None) -> None:
        """Stop a request and free its KV at every level (a no-op when it already ended). With a
        `reason`, its stream ends with FinishReason.ABORT (someone is still reading it)."""
        self._commands.append(("abort", request_id, reason))
        self._wake.set()

    def abort_all(self) -> None:
        """Abort every request in flight (the drain's deadline): each ends with finish reason 'abort'."""
        with self._lock:
            request_ids = list(self._streams)
        for request_id in request_ids:
            self.abort(request_id, "the server's drain timed out")

    def stop(self, timeout_s: float = 60.0) -> None:
        """Abort whatever is still in flight and end the thread (after the step it is in)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # ---- engine thread --------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            self._apply_commands()
            if not self.engine.has_unfinished:
                self._wake.wait(self.idle_wait_s)
                self._wake.clear()
                continue
            outputs = self._step()
            self._deliver(outputs)
        self._apply_commands()
        for request_id in list(self._streams):
            self.engine.abort(request_id)
            self._end(request_id, StreamEnd(FinishReason.ABORT, "the server shut down"))

    def _apply_commands(self) -> None:
        if not self._commands:
            return
        while self._commands:
            command = self._commands.popleft()
            if command[0] == "add":
                _, request_id, prompt_token_ids, params, arrival = command
                try:
                    self.engine.add_request(prompt_token_ids, params, request_id=request_id, arrival_time=arrival)
                except ValueError as exc:
                    self._end(request_id, StreamEnd(FinishReason.ERROR, str(exc)))
                else:
                    self._notify("observe_added", self.engine.scheduler.requests[request_id])
            elif command[0] == "abort":
                if self.engine.abort(command[1]):
                    logger.debug("aborted %s", command[1])
                    self._notify("observe_removed", command[1])
                self._end(command[1], StreamEnd(FinishReason.ABORT, command[2]) if command[2] else None)
        self.snapshot = EngineSnapshot.of(self.engine)

    def _end(self, request_id: str, item: StreamEnd | RequestOutput | None) -> None:
        with self._lock:
            stream = self._streams.pop(request_id, None)
        if stream is not None and item is not None:
            stream.deliver(item)

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        """The snapshot and the observers first (metrics, router state), so a client that sees
        its last token also sees that step in /metrics; then each request's stream."""
        self.snapshot = EngineSnapshot.of(self.engine)
        if outputs:
            self._notify("observe_step", self.engine, outputs)
        for output in outputs:
            if output.finished:
                self._end(output.request_id, output)
            else:
                stream = self._streams.get(output.request_id)
                if stream is not None:
                    stream.deliver(output)

    def _notify(self, event: str, *args) -> None:
        for observer in self.observers:
            method = getattr(observer, event, None)
            if method is None:
                continue
            try:
                method(*args)
            except Exception:
                logger.exception("%s.%s failed (the loop goes on)", type(observer).__name__, event)

    def _step(self) -> list[RequestOutput]:
        try:
            outputs = self.engine.step()
        except Exception as exc:
            self.num_failed_steps += 1
            self._notify("observe_failed_step")
            logger.exception("engine step failed (%s); isolating the failing request", type(exc).__name__)
            return self._recover()
        self.num_steps += 1
        self._consecutive_failures = 0
        return outputs

    def _recover(self) -> list[RequestOutput]:
        """After a failed step: find the rows that fail alone (`Engine.isolate_failures`), fail only them."""
        batch = list(self.engine.scheduler.running)
        self._consecutive_failures += 1
        failures = self.engine.isolate_failures()
        if not failures and self._consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            failures = [(r, "the batch failed repeatedly") for r in batch]
        outputs = []
        for request, message in failures:
            logger.error("request %s failed and was stopped: %s", request.request_id, message)
            self.engine.abort(request.request_id, error=message)      # frees its KV at every level
            self._notify("observe_removed", request.request_id)
            outputs.append(RequestOutput(request.request_id, [], list(request.output_token_ids), True,
                                         FinishReason.ERROR, request.stats, None, message))
        if failures:
            self._consecutive_failures = 0
        return outputs
