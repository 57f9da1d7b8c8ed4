"""`--api-key`: Bearer-token authentication, as vLLM's and the OpenAI API's.

With a key set, every request except the probes (`/health`, `/ready`, and `/metrics` unless
`--api-key-metrics`) must carry `Authorization: Bearer <key>`; anything else gets 401 with
the OpenAI error body (`code: invalid_api_key`) before its body is read. Keys are compared in
constant time, so response timing does not reveal how much of a guess was right.
"""

from __future__ import annotations

import hmac
import json
import os

from starlette.types import ASGIApp, Receive, Scope, Send

from serving.errors import error_body

API_KEY_ENV = "SPECROUTE_API_KEY"
PROBE_PATHS = ("/health", "/ready")


def api_key_from_env(api_key: str) -> str:
    """`api_key` when given on the command line, else `$SPECROUTE_API_KEY` ('' when unset)."""
    return api_key or os.environ.get(API_KEY_ENV, "")


def open_paths(protect_metrics: bool) -> tuple[str, ...]:
    """The paths served without a key: the probes, and /metrics unless `protect_metrics`."""
    return PROBE_PATHS if protect_metrics else PROBE_PATHS + ("/metrics",)


def is_authorized(authorization: str, api_key: str) -> bool:
    """Whether an `Authorization` header value carries `api_key` as a Bearer token."""
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


class ApiKeyAuth:
    """ASGI middleware; see the module docstring. `api_key` '' lets every request through."""

    def __init__(self, app: ASGIApp, api_key: str = "", protect_metrics: bool = False):
        self.app = app
        self.api_key = api_key
        self.open_paths = open_paths(protect_metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.api_key or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        authorization = dict(scope.get("headers", ())).get(b"authorization", b"").decode("latin-1")
        if is_authorized(authorization, self.api_key):
            await self.app(scope, receive, send)
            return
        message = ("Incorrect API key provided." if authorization else
                   "You didn't provide an API key. Send it as the header 'Authorization: Bearer <key>'.")
        body = json.dumps(error_body(message, "invalid_request_error", None, "invalid_api_key")).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})
