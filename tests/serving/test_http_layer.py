"""The HTTP layer keeps the contract too: slow reads are cut off, connections are bounded, and
what uvicorn would answer in plain text (or not at all) gets the server's JSON error body."""

from __future__ import annotations

import json
import socket
import urllib.parse

import httpx
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.serving.conftest import live_server


def exchange(url: str, request: bytes, read_timeout_s: float = 30.0) -> tuple[int, dict, bytes, bool]:
    """Send raw bytes and read until the server closes: (status, headers, body, closed by the server)."""
    address = urllib.parse.urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=read_timeout_s) as sock:
        if request:
            sock.sendall(request)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
            closed = True
        except TimeoutError:
            closed = False
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]) if lines[0] else 0, headers, body, closed


def assert_json_error(status: int, headers: dict, body: bytes, expected: int) -> dict:
    assert status == expected, (status, body)
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize("request_bytes, what", [
    (b"", "nothing"),
    (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: app", "half the headers"),
    (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
     b'{"prompt": "h', "half the body"),
])
def test_slow_reads_get_408_and_are_closed(make_state, request_bytes, what):
    state = make_state(header_timeout_s=0.5, body_timeout_s=0.5)
    with live_server(state) as url:
        status, headers, body, closed = exchange(url, request_bytes)
    assert closed, what
    error = assert_json_error(status, headers, body, 408)
    assert error["code"] == "request_timeout" and "0.5 s" in error["message"]


@pytest.mark.parametrize("request_bytes, expected, code", [
    (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "invalid_http_request"),
    (b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", 505, "http_version_not_supported"),
    (b"NOT AN HTTP REQUEST\r\n\r\n", 400, "invalid_http_request"),
])
def test_http_layer_errors_have_the_json_error_body(make_state, request_bytes, expected, code):
    with live_server(make_state()) as url:
        status, headers, body, _closed = exchange(url, request_bytes)
    assert assert_json_error(status, headers, body, expected)["code"] == code


def test_head_is_served_wherever_get_is(make_state):
    with live_server(make_state()) as url:
        for path in ("/health", "/v1/models", "/ready", "/metrics", "/openapi.json"):
            head, get = httpx.head(f"{url}{path}"), httpx.get(f"{url}{path}")
            assert head.status_code == get.status_code == 200 and head.content == b""
            assert head.headers["content-type"] == get.headers["content-type"]
        refused = httpx.head(f"{url}/v1/completions")
        assert refused.status_code == 405 and refused.content == b"" and refused.headers["allow"] == "POST"


def test_connections_beyond_the_maximum_get_503(make_state):
    state = make_state(max_connections=2, header_timeout_s=30)
    with live_server(state) as url:
        address = urllib.parse.urlsplit(url)
        held = [socket.create_connection((address.hostname, address.port)) for _ in range(2)]
        try:
            status, headers, body, closed = exchange(url, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        finally:
            for sock in held:
                sock.close()
        assert closed and assert_json_error(status, headers, body, 503)["code"] == "too_many_connections"
        assert httpx.get(f"{url}/health").status_code == 200          # the held ones closed: room again


def test_allowed_hosts_refuse_other_host_headers(make_state):
    state = make_state(allowed_hosts="api.example, *.internal")
    with live_server(state) as url:
        refused = httpx.get(f"{url}/health", headers={"host": "evil.example"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_host"
        for host in ("api.example", "api.example:8000", "gpu1.internal"):
            assert httpx.get(f"{url}/health", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("docs", [False, True])
def test_docs_are_off_unless_asked_for(make_state, docs):
    with TestClient(create_app(make_state(docs=docs))) as client:
        assert client.get("/docs").status_code == (200 if docs else 404)
        assert client.get("/redoc").status_code == (200 if docs else 404)
        assert client.get("/openapi.json").status_code == 200
