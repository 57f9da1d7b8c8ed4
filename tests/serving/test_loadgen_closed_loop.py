"""The load generator's closed loop (`--request-rate inf --max-concurrency C`): C clients, each
sending its next request when its last one returns, so exactly C requests are in flight until
fewer than C are left. The fake server holds every request until the test releases it, one at a
time, so the count is read at rest, not raced."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serving.loadgen import LoadgenConfig, plan_requests, run_load

WAIT_S = 30.0       # only a broken loop waits this long


class HeldHandler(BaseHTTPRequestHandler):
    """Counts requests in flight; answers each (3 streamed chunks) only once the test releases it."""

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        gate = self.server.gate
        with gate:
            ident = self.server.num_arrived
            self.server.num_arrived += 1
            self.server.in_flight_at_arrival.append(self.server.num_arrived - self.server.num_finished)
            gate.notify_all()
            gate.wait_for(lambda: ident in self.server.released, timeout=WAIT_S)
            self.server.num_finished += 1         # before the reply ends: the client's next request comes after
            gate.notify_all()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for _ in range(3):
            self.wfile.write(f"data: {json.dumps({'choices': [{'index': 0, 'text': 'word '}]})}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


@contextlib.contextmanager
def held_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), HeldHandler)
    server.gate, server.num_arrived, server.num_finished = threading.Condition(), 0, 0
    server.released, server.in_flight_at_arrival = set(), []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        with server.gate:
            server.released.update(range(10_000))
            server.gate.notify_all()
        server.shutdown()
        server.server_close()


def release_one_at_a_time(server, num_requests: int, clients: int, in_flight_seen: list[int]) -> None:
    """Each round: wait until the earlier releases have finished and the loop has refilled, note how
    many requests are in flight, release the oldest."""
    gate = server.gate
    for done in range(num_requests):
        with gate:
            expected = min(clients, num_requests - done)
            gate.wait_for(lambda: server.num_finished == done and server.num_arrived - done >= expected,
                          timeout=WAIT_S)
            in_flight_seen.append(server.num_arrived - server.num_finished)
            server.released.add(done)
            gate.notify_all()


@pytest.mark.parametrize("clients, num_requests", [(1, 3), (3, 8)])
def test_a_closed_loop_keeps_exactly_c_requests_in_flight(clients, num_requests):
    with held_server() as server:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        cfg = LoadgenConfig(base_url=url, model="fake", request_rate=float("inf"), max_concurrency=clients,
                            num_prompts=num_requests, dataset_name="specbench", max_tokens=8, min_tokens=8)
        plans = plan_requests(cfg)
        assert len(plans) == num_requests and {p.arrival_s for p in plans} == {0.0}
        seen: list[int] = []
        controller = threading.Thread(target=release_one_at_a_time, args=(server, num_requests, clients, seen))
        controller.start()
        results, _ = asyncio.run(run_load(cfg, plans))
        controller.join()
    assert all(r.ok and r.num_output_tokens == 3 for r in results)
    assert seen == [min(clients, num_requests - done) for done in range(num_requests)]
    assert max(server.in_flight_at_arrival) == clients      # never one more than the clients


def test_inf_is_the_only_rate_beyond_the_finite_ones():
    assert LoadgenConfig(request_rate=float("inf"), max_concurrency=4).is_closed_loop
    assert not LoadgenConfig(request_rate=2.0).is_closed_loop
    with pytest.raises(ValueError, match="request-rate > 0"):
        LoadgenConfig(request_rate=float("nan"))
