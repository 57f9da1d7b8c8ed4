"""Running the app under uvicorn with a graceful drain on SIGTERM.

On SIGTERM (or SIGINT) the server first drains with its listener still open: `/ready` answers
503 `draining` (so a load balancer's health check sees it and moves traffic away), `/health`
still answers, new generation requests get 503, and in-flight requests run to the end, for at
most `drain_timeout_s` (then the rest are aborted, so their clients get what was generated,
with finish reason 'abort'). Then uvicorn shuts down (closing the listener and waiting for the last
responses to be written) and the app's lifespan stops the engine loop. A second signal skips
the rest of the drain.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from serving.app import ServingState, create_app
from serving.http_protocol import ConnectionLimits, protocol_factory

DRAIN_POLL_S = 0.05
ABORT_GRACE_S = 2.0         # after the drain timeout, time for aborted requests to send what they have

logger = logging.getLogger("serving")


class DrainingServer(uvicorn.Server):
    """uvicorn's server that drains (listener open) before it starts uvicorn's own shutdown."""

    def __init__(self, config: uvicorn.Config, state: ServingState, drain_timeout_s: float):
        super().__init__(config)
        self.serving_state = state
        self.drain_timeout_s = drain_timeout_s
        self.drain_started: float | None = None

    def handle_exit(self, sig, frame) -> None:
        if self.serving_state.is_draining:          # a second signal: stop now
            super().handle_exit(sig, frame)
            return
        self._captured_signals.append(sig)          # uvicorn re-raises it after its shutdown, as it would
        self.serving_state.is_draining = True
        self.drain_started = time.monotonic()
        threading.Thread(target=self._drain, name="drain", daemon=True).start()

    def _drain(self) -> None:
        engine_loop = self.serving_state.engine_loop
        deadline = self.drain_started + self.drain_timeout_s
        while engine_loop.num_in_flight and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_S)
        if engine_loop.num_in_flight:
            logger.warning("drain timeout (%.1f s): aborting %d requests", self.drain_timeout_s,
                           engine_loop.num_in_flight)
            engine_loop.abort_all()
            cutoff = time.monotonic() + ABORT_GRACE_S
            while engine_loop.num_in_flight and time.monotonic() < cutoff:
                time.sleep(DRAIN_POLL_S)
        self.should_exit = True


def build_server(state: ServingState, host: str, port: int, drain_timeout_s: float = 60.0,
                 log_level: str = "info") -> DrainingServer:
    limits = ConnectionLimits(state.config.header_timeout_s, state.config.max_connections)
    config = uvicorn.Config(create_app(state), host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=int(max(1, drain_timeout_s)), access_log=False,
                            lifespan="on", http=protocol_factory(limits))
    return DrainingServer(config, state, drain_timeout_s)


def serve(state: ServingState, host: str, port: int, drain_timeout_s: float = 60.0, log_level: str = "info",
          sockets: list[socket.socket] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; returns after the drain."""
    build_server(state, host, port, drain_timeout_s, log_level).run(sockets=sockets)
