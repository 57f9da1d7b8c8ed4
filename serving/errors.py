"""OpenAI error bodies for every refusal, and the body-size limit.

Every error the server sends is `{"error": {"message", "type", "param", "code"}}`. FastAPI's
422 validation errors become 400 (OpenAI's status for a bad request); a body over the limit
gets 413 before it is parsed; anything unexpected gets a 500 with the same body shape and is
logged with its traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.protocol import EXPECTED_FORMS, RequestError

logger = logging.getLogger("serving")

ERROR_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 405: "invalid_request_error",
          408: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error", 500: "internal_error",
          503: "service_unavailable"}


MAX_ECHO_CHARS = 200


def printable(text: str) -> str:
    """`text` made safe to put in a JSON body: lone surrogates escaped, length capped."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= MAX_ECHO_CHARS else text[:MAX_ECHO_CHARS] + "..."


def error_body(message: str, error_type: str = "invalid_request_error", param: str | None = None,
               code: str | int | None = None) -> dict:
    return {"error": {"message": printable(message), "type": error_type,
                      "param": None if param is None else printable(param), "code": code}}


def error_response(status_code: int, message: str, param: str | None = None, code: str | None = None,
                   error_type: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = error_body(message, error_type or ERROR_TYPES.get(status_code, "invalid_request_error"), param, code)
    return JSONResponse(body, status_code=status_code, headers=headers)


_TYPE_ERRORS = ("_type", "is_instance_of", "literal_error", "union_tag_invalid", "model_attributes_type")


def _describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None]:
    """One readable sentence and the offending field from pydantic's list of errors.

    A union field reports one error per member; those are collapsed into the field's
    `EXPECTED_FORMS` sentence, or the most specific member error (a bound, not a type).
    """
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"request body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}", None
    if first.get("type") == "missing" and not _param_of(first):
        return "request body is missing", None
    param = _param_of(first)
    same_field = [e for e in errors if _field_of(e) == _field_of(first)]
    if len(same_field) > 1:                  # a union's members, or several items of one list
        specific = [e for e in same_field if not e.get("type", "").endswith(_TYPE_ERRORS)]
        leaf = (param or "").rsplit(".", 1)[-1]
        if not specific and leaf in EXPECTED_FORMS:
            return f"{param}: {EXPECTED_FORMS[leaf]}", param
        first = (specific or same_field)[0]
        param = _param_of(first)
    message = f"{param}: {_message_of(first)}" if param else _message_of(first)
    others = {_field_of(e) for e in errors} - {_field_of(first)}
    if others:
        message += f" (and {len(others)} more invalid field{'s' if len(others) > 1 else ''})"
    return message, param


def _param_of(error: dict) -> str | None:
    """The field path without pydantic's union member tags: ('body', 'prompt', 'str') -> 'prompt'."""
    parts = [str(p) for p in error.get("loc", ()) if p != "body" and not _is_type_tag(str(p))]
    return ".".join(parts) or None


def _field_of(error: dict) -> str | None:
    loc = [p for p in error.get("loc", ()) if p != "body"]
    return str(loc[0]) if loc else None


def _message_of(error: dict) -> str:
    """pydantic's message, without 'Value error, ' and never the offending input itself."""
    message = str(error.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")


def _is_type_tag(part: str) -> bool:
    return any(token in part for token in ("[", "function-", "constrained-")) or part in (
        "str", "int", "float", "bool", "list", "dict", "none")


def install_error_handlers(app: FastAPI) -> None:
    """Make every refusal an OpenAI error body (and never a bare 422 or HTML page)."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation_error(exc)
        return error_response(400, message, param)

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        return error_response(exc.status_code, exc.message, exc.param, exc.code, exc.error_type, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error serving %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}")


async def send_json_error(send: Send, status: int, message: str, code: str) -> None:
    """An error response straight from ASGI middleware (below FastAPI's handlers); closes the connection."""
    body = json.dumps(error_body(message, ERROR_TYPES.get(status, "invalid_request_error"), None, code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """ASGI middleware: refuse a request body over `max_bytes` with 413, declared or streamed, and
    one not received within `read_timeout_s` with 408 (a client trickling its body cannot hold a
    connection and a handler open).

    The body is read here (up to the limit) and replayed to the app, so a chunked upload
    cannot slip past a Content-Length check; later `receive` calls (disconnects) pass through.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float = 10.0):
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_json_error(send, 413, f"request body is larger than {self.max_bytes} bytes", "request_too_large")
            return
        chunks: list[bytes] = []
        size = 0
        deadline = asyncio.get_running_loop().time() + self.read_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - asyncio.get_running_loop().time(), 0))
            except asyncio.TimeoutError:
                await send_json_error(send, 408, f"request body not received within {self.read_timeout_s:g} s",
                                   "request_timeout")
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_json_error(send, 413, f"request body is larger than {self.max_bytes} bytes",
                                   "request_too_large")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
