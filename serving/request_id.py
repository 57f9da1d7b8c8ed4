"""`X-Request-Id`: each request's id, the client's when it sends one, echoed on every response.

The id is put in `request.state.request_id` for the handlers and logged (DEBUG, logger
`serving.requests`) with the request's method, path and status, so a client's id finds its
request in the server's log. It is added to the response headers as they start, so streamed
responses and the middleware's own refusals carry it too.
"""

from __future__ import annotations

import logging
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
MAX_ID_CHARS = 128

logger = logging.getLogger("serving.requests")


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's `X-Request-Id` when it is printable ASCII of at most 128 characters, else a new id."""
    given = dict(headers).get(HEADER, b"")
    if given and len(given) <= MAX_ID_CHARS and all(0x21 <= byte <= 0x7E for byte in given):
        return given.decode("ascii")
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope.get("headers", []))
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": headers + [(HEADER, request_id.encode("ascii"))]}
                logger.debug("request %s: %s %s -> %d", request_id, scope["method"], scope["path"], message["status"])
            await send(message)

        await self.app(scope, receive, send_with_id)
