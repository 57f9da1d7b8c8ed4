"""Running the app under uvicorn with a graceful drain on SIGTERM.

On SIGTERM (or SIGINT) uvicorn stops accepting connections and waits, up to
`drain_timeout_s`, for in-flight responses to finish; only then does the app's lifespan stop
the engine loop. While draining, `/ready` answers 503 and new requests on open keep-alive
connections get 503, so a load balancer moves traffic away.
"""

from __future__ import annotations

import socket

import uvicorn

from serving.app import ServingState, create_app


class DrainingServer(uvicorn.Server):
    """uvicorn's server that also tells the app it is draining when a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, state: ServingState):
        super().__init__(config)
        self.serving_state = state

    def handle_exit(self, sig, frame) -> None:
        self.serving_state.is_draining = True
        super().handle_exit(sig, frame)


def build_server(state: ServingState, host: str, port: int, drain_timeout_s: float = 60.0,
                 log_level: str = "info") -> DrainingServer:
    config = uvicorn.Config(create_app(state), host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=int(max(1, drain_timeout_s)), access_log=False,
                            lifespan="on")
    return DrainingServer(config, state)


def serve(state: ServingState, host: str, port: int, drain_timeout_s: float = 60.0, log_level: str = "info",
          sockets: list[socket.socket] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; returns after the drain."""
    build_server(state, host, port, drain_timeout_s, log_level).run(sockets=sockets)
