"""uvicorn's HTTP/1.1 protocol (h11) with bounded reads and errors in the server's JSON shape.

uvicorn waits forever for a client that connects and sends nothing or half its headers, takes
any number of connections, and answers a request it cannot parse (a negative Content-Length,
a malformed request line) with a plain-text 400. `BoundedH11Protocol` instead:

- closes a connection whose request headers are not complete `header_timeout_s` after the
  connection (or its first byte of a next request) arrived, with a 408 JSON error;
- refuses connections beyond `max_connections` with a 503 JSON error and closes them;
- answers unparseable requests with a 400 JSON error (OpenAI's body, as every other error).

The body's own deadline is kept by the app (`serving/errors.py`, `BodySizeLimit`), which reads it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from serving.errors import ERROR_TYPES, error_body

CLOSE_GRACE_S = 1.0
REASONS = {400: b"Bad Request", 408: b"Request Timeout", 503: b"Service Unavailable"}


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 5.0
    max_connections: int = 256


def raw_error(status: int, message: str, code: str) -> bytes:
    """A whole HTTP/1.1 error response, written below h11 (which cannot answer a request it never parsed)."""
    body = json.dumps(error_body(message, ERROR_TYPES.get(status, "invalid_request_error"), None, code)).encode()
    head = (f"HTTP/1.1 {status} ".encode() + REASONS[status] + b"\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode())
    return head + body


class BoundedH11Protocol(H11Protocol):
    """See the module docstring; `limits` come from `protocol_factory`."""

    def __init__(self, *args, limits: ConnectionLimits, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._header_timer = None
        self._is_refused = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, f"the server holds at most {self.limits.max_connections} connections; retry later",
                         "too_many_connections")
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._is_refused:                    # answered and closing: what the client still sends is dropped
            return
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()            # the first byte of a next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_timer()         # headers complete (or the request failed and was answered)

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "invalid HTTP request: malformed request line, headers or Content-Length",
                     "invalid_http_request")

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._refuse(408, f"request headers not received within {self.limits.header_timeout_s:g} s",
                         "request_timeout")

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer, then close after a grace: closing with the client's request unread would send
        a reset, and the client could lose the answer."""
        self._disarm_header_timer()
        if self._is_refused or self.transport.is_closing():
            return
        self._is_refused = True
        self.transport.write(raw_error(status, message, code))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(CLOSE_GRACE_S, self.transport.close)


def protocol_factory(limits: ConnectionLimits):
    """What `uvicorn.Config(http=...)` takes: builds a `BoundedH11Protocol` per connection."""
    return functools.partial(BoundedH11Protocol, limits=limits)
