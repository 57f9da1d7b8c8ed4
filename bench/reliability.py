"""Reliability: the real server on loopback against everything a careless, hostile or impatient client does.

Starts `python -m serving` on tiny random models (so it runs in minutes on 2 cores) and runs:
schemathesis over the server's own `/openapi.json` (positive data must be accepted, negative
data refused, every response must match the document) and a hand-written list of bad inputs
(malformed JSON, NaN/Infinity, lone surrogates, out-of-range numbers, an oversize body,
unknown and unsupported fields), on a small fast model; then, on a slower one: overload, with a
probe's Retry-After against the time a place took to free; 5x as many clients as places, each
sleeping Retry-After and trying up to 6 times (none may give up; Retry-After against when, first
come first served, a place really freed for it); /health p99 while 8 clients send maximum-size
prompts; 100 connections sending their headers or body too slowly (each must get 408 and be
closed within its timeout); disconnects, then the in-flight count and free KV slots; concurrent
identical greedy requests; and SIGTERM, watching `/ready` say `draining` while a stream
finishes. Writes bench/results/<name>.json (a `summary` object) and .md. A script, not a CI test.

    .venv/bin/python -m bench.reliability
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from bench.reliability_inputs import COMPLETIONS, bad_inputs, run_bad_inputs
from bench.reliability_load import run_big_prompts, run_retrying_clients, run_slow_reads
from bench.reliability_report import summarize, targets_met, targets_table
from bench.reliability_servers import forward_path, start_server, tiny_model_dir
from cli.dataclass_args import parse_dataclass
from cli.results import machine_info, publish_results
from serving.config import ServerConfig
from serving.server_process import ServerProcess
from tests.serving.contract import ContractReport, run_contract
from tests.serving.response_schema import response_errors

PROMPT = "the cat sat on the mat. the cat sat on the"


@dataclass
class ReliabilityArgs:
    """Contract, bad inputs, overload, retrying clients, big prompts, slow reads, disconnects,
    determinism and drain against the real server."""

    contract_examples: int = field(default=380, metadata={"help": "schemathesis cases per operation and mode "
                                                                  "(positive, negative)"})
    contract_max_model_len: int = field(default=512, metadata={"help": "the contract server's context (bounds what "
                                                                      "a schema-valid request may cost)"})
    max_num_seqs: int = field(default=4, metadata={"help": "server --max-num-seqs", "aliases": ["--max-batch"]})
    max_queue: int = field(default=4, metadata={"help": "server --max-queue"})
    tiny_hidden_size: int = field(default=384, metadata={"help": "hidden size of the 'tiny' model (slow enough "
                                                                 "that a full server stays full for seconds)"})
    tiny_layers: int = field(default=6, metadata={"help": "layers of the 'tiny' model"})
    overload_tokens: int = field(default=600, metadata={"help": "max_tokens of the requests that fill the server "
                                                                "(and of the stream cut by SIGTERM)"})
    overload_rounds: int = field(default=2, metadata={"help": "times the server is filled and probed"})
    oversubscription: int = field(default=5, metadata={"help": "retrying clients per place (max_num_seqs + max_queue)"})
    retry_tokens: int = field(default=150, metadata={"help": "max_tokens of each retrying client's request"})
    num_threads: int = field(default=1, metadata={"help": "server torch threads (1 on a shared machine)"})
    seed: int = field(default=0, metadata={"help": "hypothesis seed"})
    output_name: str = field(default="reliability", metadata={"help": "bench/results/<name>.json and .md"})

    def __post_init__(self) -> None:
        if min(self.contract_examples, self.max_num_seqs, self.max_queue, self.overload_rounds, self.oversubscription) < 1:
            raise ValueError("contract_examples, max_num_seqs, max_queue, overload_rounds and oversubscription must be >= 1")


@dataclass
class Tally:
    """What the checks found; `notes` keeps the first few examples of each problem."""

    cases: int = 0
    responses_5xx: int = 0
    schema_violations: int = 0
    ignored_fields_accepted: int = 0
    lost_requests: int = 0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.notes) < 40:
            self.notes.append(text[:300])

    def check(self, document: dict, path: str, method: str, response: httpx.Response, label: str) -> None:
        self.cases += 1
        if response.status_code >= 500:
            self.responses_5xx += 1
            self.note(f"5xx {label}: {response.status_code} {response.text[:120]}")
        errors = response_errors(document, path, method, response)
        if errors:
            self.schema_violations += 1
            self.note(f"schema {label}: {errors[0]}")

    def send(self, client: httpx.Client, document: dict, path: str, label: str, **kwargs) -> httpx.Response | None:
        try:
            response = client.post(path, **kwargs)
        except httpx.HTTPError as exc:
            self.cases += 1
            self.lost_requests += 1
            self.note(f"lost {label}: {exc!r}")
            return None
        self.check(document, path, "post", response, label)
        return response


def ready(url: str) -> dict:
    return httpx.get(f"{url}/ready", timeout=10).json()


def wait_for(condition, timeout_s: float, poll_s: float = 0.05) -> float | None:
    """Seconds until `condition()` holds, or None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if condition():
            return time.monotonic() - start
        time.sleep(poll_s)
    return None


def run_overload(url: str, document: dict, tally: Tally, args: ReliabilityArgs) -> list[dict]:
    """Fill every place with long requests, probe with one more, time how long a place took to free."""
    capacity = args.max_num_seqs + args.max_queue
    body = {"prompt": PROMPT, "max_tokens": args.overload_tokens, "temperature": 0, "ignore_eos": True}
    rounds = []
    with httpx.Client(base_url=url, timeout=600) as client, ThreadPoolExecutor(capacity) as pool:
        for _ in range(args.overload_rounds):
            held = [pool.submit(tally.send, client, document, COMPLETIONS, "overload held", json=body)
                    for _ in range(capacity)]
            wait_for(lambda: ready(url)["num_in_flight"] >= capacity, 30)
            time.sleep(0.5)                          # let the running batch get going
            probe = tally.send(client, document, COMPLETIONS, "overload probe", json={"prompt": "hi", "max_tokens": 2})
            refused_at = time.monotonic()
            if probe is None or probe.status_code != 429:
                tally.note(f"overload probe got {None if probe is None else probe.status_code}, not 429")
                [f.result() for f in held]
                continue
            freed = wait_for(lambda: ready(url)["num_in_flight"] < capacity, 600)
            waited = (freed if freed is not None else time.monotonic() - refused_at)
            retry_after = int(probe.headers["Retry-After"])
            responses = [f.result() for f in held]
            complete = sum(r is not None and r.status_code == 200
                           and r.json()["usage"]["completion_tokens"] == args.overload_tokens for r in responses)
            tally.lost_requests += capacity - complete
            rounds.append({"retry_after_s": retry_after, "waited_s": waited, "ratio": retry_after / max(waited, 1e-3),
                           "held_complete": complete})
    return rounds


def kv_free_slots(url: str) -> dict[str, float]:
    free = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("specroute:kv_cache_free_slots{"):
            labels, value = line.rsplit(" ", 1)
            free[labels] = float(value)
    return free


def run_disconnects(url: str) -> dict:
    wait_for(lambda: ready(url)["num_in_flight"] == 0, 60)
    baseline = kv_free_slots(url)
    body = {"prompt": PROMPT, "max_tokens": 300, "temperature": 0, "ignore_eos": True}
    for _ in range(3):
        with httpx.stream("POST", f"{url}{COMPLETIONS}", json={**body, "stream": True}, timeout=60) as response:
            for index, _line in enumerate(response.iter_lines()):
                if index >= 4:
                    break
        port = int(url.rsplit(":", 1)[1])
        payload = json.dumps(body).encode()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
            wait_for(lambda: ready(url)["num_in_flight"] > 0, 10)
    idle = wait_for(lambda: ready(url)["num_in_flight"] == 0, 30)
    after = kv_free_slots(url)
    leaked = int(sum(baseline[k] - after.get(k, 0) for k in baseline))
    return {"num_in_flight_after": ready(url)["num_in_flight"], "idle_after_s": idle, "kv_slots_leaked": leaked}


def run_determinism(url: str, capacity: int) -> bool:
    """As many identical greedy requests at once as the server holds: one text, the one a lone request gets."""
    body = {"prompt": PROMPT, "max_tokens": 40, "temperature": 0, "ignore_eos": True}
    with httpx.Client(base_url=url, timeout=120) as client, ThreadPoolExecutor(capacity) as pool:
        texts = list(pool.map(lambda _: client.post(COMPLETIONS, json=body).json()["choices"][0]["text"],
                              range(capacity)))
        alone = client.post(COMPLETIONS, json=body).json()["choices"][0]["text"]
    return len(set(texts)) == 1 and texts[0] == alone


def run_drain(server: ServerProcess, args: ReliabilityArgs) -> dict:
    """SIGTERM mid-stream: /ready must say 'draining' (503), the stream must finish, the exit be 0."""
    body = {"prompt": PROMPT, "max_tokens": args.overload_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    seen_draining, lines, probes = [], [], []

    def probe() -> None:
        time.sleep(0.1)
        try:
            response = httpx.get(f"{server.url}/ready", timeout=5)
            seen_draining.append(response.status_code == 503 and response.json()["status"] == "draining")
            probes.append(f"{response.status_code} {response.text[:80]}")
        except httpx.HTTPError as exc:
            seen_draining.append(False)
            probes.append(repr(exc))

    with httpx.stream("POST", f"{server.url}{COMPLETIONS}", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if not line:
                continue
            lines.append(line)
            if len(lines) == 3:             # one SIGTERM (a second one means "stop now")
                server.process.send_signal(signal.SIGTERM)
                threading.Thread(target=probe).start()
    finished = (bool(lines) and lines[-1] == "data: [DONE]"
                and f'"completion_tokens": {args.overload_tokens}' in lines[-2])
    exit_code = server.process.wait(timeout=120)
    return {"ready_said_draining": bool(seen_draining and seen_draining[0]), "ready_probe": probes,
            "stream_finished": finished,
            "exit_code": exit_code, "drain_ok": bool(seen_draining and seen_draining[0]) and finished and exit_code == 0}


def server_flags(args: ReliabilityArgs) -> list[str]:
    """--dtype float32 keeps both servers on the default path (float32-prepacked): `auto` picks
    bfloat16-dense for the 64-wide contract model, whose steps fail (a dtype mismatch in the engine)."""
    return ["--max-num-seqs", str(args.max_num_seqs), "--max-queue", str(args.max_queue),
            "--num-threads", str(args.num_threads), "--dtype", "float32"]


def run_contract_phase(directory: Path, args: ReliabilityArgs, tally: Tally) -> tuple[ContractReport, int]:
    """schemathesis and the hand-written bad inputs, on a small fast model with a short context
    (a schema-valid request may ask for 16 prompts x 16 choices up to the context)."""
    model = str(tiny_model_dir(directory / "small", 64, 2))
    server = start_server(model, server_flags(args) + ["--max-model-len", str(args.contract_max_model_len),
                                                       "--default-max-tokens", "8"], f"{args.output_name}-contract")
    try:
        contract = run_contract(server.url, args.contract_examples, args.seed)
        document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
        with httpx.Client(base_url=server.url, timeout=120) as client:
            wrong_status = run_bad_inputs(client, document, tally)
    finally:
        server.stop(timeout_s=30)
    contract.forward_path = forward_path(server.log_path)
    for example in contract.examples:
        tally.note(f"contract: {example}")
    return contract, wrong_status


def main(args: ReliabilityArgs) -> dict:
    started = time.monotonic()
    tally = Tally()
    with tempfile.TemporaryDirectory() as tmp:
        contract, wrong_status = run_contract_phase(Path(tmp), args, tally)
        model = str(tiny_model_dir(Path(tmp) / "tiny", args.tiny_hidden_size, args.tiny_layers))
        server = start_server(model, server_flags(args) + ["--default-max-tokens", "16"], args.output_name)
        config = ServerConfig()
        try:
            document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
            overload = run_overload(server.url, document, tally, args)
            capacity = args.max_num_seqs + args.max_queue
            retrying = run_retrying_clients(server.url, args.oversubscription * capacity, args.retry_tokens)
            big = run_big_prompts(server.url, config.max_body_bytes)
            slow = run_slow_reads(server.url, config.header_timeout_s, config.body_timeout_s)
            disconnects = run_disconnects(server.url)
            greedy_identical = run_determinism(server.url, capacity)
            drain = run_drain(server, args)
        finally:
            server.stop(timeout_s=30)
        path = forward_path(server.log_path)
    summary = summarize(tally, contract, wrong_status, overload, retrying, big, slow, disconnects, drain,
                        greedy_identical, path)
    data = {"args": asdict(args), "summary": summary, "contract": {"cases": dict(contract.cases),
                                                                   "failures": dict(contract.failures),
                                                                   "forward_path": contract.forward_path},
            "overload": overload, "retrying_clients": retrying, "big_prompts": big, "slow_reads": slow,
            "disconnects": disconnects, "drain": drain, "notes": tally.notes,
            "elapsed_s": time.monotonic() - started, "machine": machine_info()}
    targets = targets_met(summary)
    data["passed"] = all(targets.values())
    markdown = "\n\n".join([targets_table(summary, targets),
                            f"{summary['cases']} cases against `python -m serving` on tiny random models "
                            f"({contract.num_cases} from schemathesis over /openapi.json, {len(bad_inputs())} "
                            f"hand-written bad inputs, {args.overload_rounds} overload rounds, "
                            f"{retrying['clients']} retrying clients on {args.max_num_seqs} + {args.max_queue} places); "
                            f"greedy determinism: {'identical' if greedy_identical else 'DIFFERENT'}; "
                            f"forward path {path}; CPU {summary['cpu']}; {data['elapsed_s']:.0f} s. "
                            "Rerun: `.venv/bin/python -m bench.reliability`."])
    publish_results(args.output_name, data, markdown)
    return data


if __name__ == "__main__":
    sys.exit(0 if main(parse_dataclass(ReliabilityArgs, description=__doc__.split("\n")[0]))["passed"] else 1)
