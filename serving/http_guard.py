"""What the HTTP layer checks before a route runs, answered in the server's JSON error shape.

- `HEAD` is served wherever `GET` is (the route runs as GET; uvicorn sends the headers only);
- a request line with an HTTP version other than 1.0 / 1.1 gets 505 (h11 would parse
  `HTTP/9.9` as 1.1 and serve it);
- with `allowed_hosts` set (`--allowed-hosts`, for a server bound beyond loopback), a `Host`
  header naming anything else gets 400, as Starlette's TrustedHostMiddleware would but with
  a JSON body (DNS rebinding: a browser page cannot then reach the server under its own name).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from serving.errors import send_json_error

HTTP_VERSIONS = ("1.0", "1.1")


def parse_allowed_hosts(text: str) -> tuple[str, ...]:
    """'a.example, *.b.example' -> ('a.example', '*.b.example'); '' or '*' -> () (any host)."""
    hosts = tuple(h.strip().lower() for h in text.split(",") if h.strip())
    return () if "*" in hosts else hosts


def host_is_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower()
    return not allowed or any(name == pattern or pattern.startswith("*.") and name.endswith(pattern[1:])
                              for pattern in allowed)


class HttpGuard:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...] = ()):
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("http_version", "1.1") not in HTTP_VERSIONS:
            await send_json_error(send, 505, f"HTTP version {scope['http_version']} is not supported; "
                                             "send HTTP/1.1", "http_version_not_supported")
            return
        host = dict(scope.get("headers", ())).get(b"host", b"").decode("latin-1")
        if not host_is_allowed(host, self.allowed_hosts):
            await send_json_error(send, 400, "the Host header names a host this server does not serve "
                                             "(see --allowed-hosts)", "invalid_host")
            return
        if scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)
