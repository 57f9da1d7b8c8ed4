"""The impatient and hostile clients of `bench.reliability`: clients that retry on 429 as told,
maximum-size prompts beside a health check, and connections that send too slowly.

Each function takes the live server's URL and returns a JSON-able dict for the results file.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import numpy as np

from tests.serving.big_prompts import health_under_big_prompts

COMPLETIONS = "/v1/completions"


@dataclass
class RetryLog:
    """What the retrying clients saw, on one clock: 429s, admissions and completions."""

    refusals: list[tuple[float, int, int]] = field(default_factory=list)     # (time, client, Retry-After)
    admitted: dict[int, float] = field(default_factory=dict)                 # client -> when its request went in
    completions: list[float] = field(default_factory=list)                   # when an admitted request ended
    final_status: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def real_waits(self) -> list[tuple[int, float]]:
        """(Retry-After, real wait) per 429: the real wait is when, first come first served, a
        place really freed for that client: the (k+1)-th completion after the 429, k being the
        clients refused before it and still waiting."""
        first_refusal: dict[int, float] = {}
        for at, client, _ in self.refusals:
            first_refusal.setdefault(client, at)
        completions = sorted(self.completions)
        pairs = []
        for at, client, retry_after in self.refusals:
            ahead = sum(1 for other, first in first_refusal.items() if other != client
                        and first < first_refusal[client] and self.admitted.get(other, float("inf")) > at)
            after = [t for t in completions if t > at]
            if len(after) > ahead:
                pairs.append((retry_after, after[ahead] - at))
        return pairs


def run_retrying_clients(url: str, num_clients: int, max_tokens: int, max_tries: int = 6) -> dict:
    """`num_clients` clients at once, each sleeping every 429's Retry-After, at most `max_tries` tries."""
    log = RetryLog()
    body = {"prompt": "the cat sat on the mat", "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            for _ in range(max_tries):
                sent = time.monotonic()
                response = http.post(COMPLETIONS, json=body)
                now = time.monotonic()
                with log.lock:
                    if response.status_code == 429:
                        log.refusals.append((now, index, int(response.headers["Retry-After"])))
                    else:
                        log.admitted[index] = sent
                        log.completions.append(now)
                        log.final_status[index] = response.status_code
                if response.status_code != 429:
                    return
                time.sleep(int(response.headers["Retry-After"]))
            log.final_status[index] = 429

    started = time.monotonic()
    with ThreadPoolExecutor(num_clients) as pool:
        list(pool.map(client, range(num_clients)))
    pairs = log.real_waits()
    ratios = [ra / max(wait, 1e-3) for ra, wait in pairs]
    statuses = list(log.final_status.values())
    return {"clients": num_clients, "max_tries": max_tries, "elapsed_s": time.monotonic() - started,
            "gave_up": statuses.count(429), "ok": statuses.count(200),
            "other_status": len(statuses) - statuses.count(429) - statuses.count(200),
            "refusals": len(log.refusals),
            "retry_after_over_wait": sum(ra for ra, _ in pairs) / max(sum(w for _, w in pairs), 1e-3) if pairs else None,
            "ratio_p10_p50_p90": [float(np.percentile(ratios, q)) for q in (10, 50, 90)] if ratios else None,
            "retry_after_s_max": max((ra for _, _, ra in log.refusals), default=None)}


def run_big_prompts(url: str, max_body_bytes: int, num_clients: int = 8, bodies_per_client: int = 2) -> dict:
    """/health p99 idle and while `num_clients` clients send maximum-size prompts (each refused)."""
    idle, loaded, statuses = health_under_big_prompts(url, max_body_bytes, num_clients, bodies_per_client)
    return {"health_p99_ms_idle": 1e3 * float(np.percentile(idle, 99)),
            "health_p99_ms_under_big_prompts": 1e3 * float(np.percentile(loaded, 99)),
            "health_max_ms_under_big_prompts": 1e3 * max(loaded), "health_probes": len(loaded),
            "big_prompt_statuses": sorted(set(statuses)), "big_prompts": len(statuses)}


def slow_read(url: str, request: bytes, limit_s: float) -> dict:
    """Send `request` (incomplete) and wait: when did the server answer and close, with what."""
    address = urllib.parse.urlsplit(url)
    started = time.monotonic()
    data, closed_after = b"", None
    with socket.create_connection((address.hostname, address.port), timeout=limit_s + 10) as sock:
        if request:
            sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                data += chunk
            closed_after = time.monotonic() - started
        except (TimeoutError, ConnectionResetError):
            pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
    body = data.partition(b"\r\n\r\n")[2]
    code = json.loads(body)["error"]["code"] if status and body else None
    return {"status": status, "code": code, "closed_after_s": closed_after}


def run_slow_reads(url: str, header_timeout_s: float, body_timeout_s: float, num_each: int = 50,
                   slack_s: float = 1.0) -> dict:
    """`num_each` connections holding partial headers, and as many holding a partial body, at once:
    each must get 408 and be closed within its timeout (+ `slack_s`)."""
    partial_headers = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: appl"
    partial_body = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 200\r\n\r\n{\"prompt\": \"hel")
    cases = [(partial_headers, header_timeout_s)] * num_each + [(partial_body, body_timeout_s)] * num_each
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(lambda case: (slow_read(url, *case), case[1]), cases))
    closed = [r for r, limit in results if r["closed_after_s"] is not None and r["closed_after_s"] <= limit + slack_s
              and r["status"] == 408]
    return {"connections": len(cases), "closed_within_timeout": len(closed),
            "header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s,
            "closed_after_s_max": max((r["closed_after_s"] or float("inf") for r, _ in results), default=None),
            "statuses": sorted({str(r["status"]) for r, _ in results})}
