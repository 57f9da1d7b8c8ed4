"""`python -m serving.loadgen`: replay a trace or a Poisson/bursty process against the server.

Like `vllm bench serve`: every request streams (SSE) so TTFT and inter-token latency are
measured at the client; it reports TTFT, TPOT, ITL and E2E latency (mean, p50, p99), request
and token throughput, goodput (requests per second that met both SLOs) and SLO attainment, as
JSON and as a table. Prompts and output lengths come from the environment's workloads
(`env.workloads`), so the server is loaded with what the router was trained on.

It is bounded (duration, request count, per-request timeout) and talks to loopback only.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

from cli.dataclass_args import parse_dataclass
from env.prompt_sources import Prompt
from env.workloads import WorkloadSpec, build_window
from serving.loadgen_report import format_table, summarize

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
PROMPT_SOURCES = {"specbench": "spec_bench", "spec_bench": "spec_bench", "sharegpt": "sharegpt",
                  "humaneval": "humaneval", "mt_bench": "mt_bench", "azure_code": "azure_code"}
MAX_DURATION_S, MAX_REQUESTS = 3600.0, 20000


@dataclass
class LoadgenConfig:
    """Load generator settings (`python -m serving.loadgen --help`)."""

    url: str = field(default="http://127.0.0.1:8000", metadata={"help": "server base URL (loopback only)"})
    trace: str = field(default="", metadata={"help": "'azure' (the shared Azure code trace) or a CSV path with "
                                             "TIMESTAMP (or time_s) and optionally GeneratedTokens columns"})
    request_rate: float = field(default=0.0, metadata={"help": "mean arrival rate (req/s) when no trace is given",
                                                       "aliases": ["--rate"]})
    burstiness: float = field(default=1.0, metadata={"help": "coefficient of variation of the gaps: 1 = Poisson, >1 burstier (gamma)"})
    time_scale: float = field(default=1.0, metadata={"help": "multiplies trace timestamps (0.1 = 10x the load)"})
    prompts: str = field(default="sharegpt", metadata={"help": "prompt source", "choices": list(PROMPT_SOURCES)})
    duration_s: float = field(default=60.0, metadata={"help": "seconds over which requests arrive",
                                                      "aliases": ["--duration"]})
    max_requests: int = field(default=1000, metadata={"help": "upper bound on requests sent"})
    max_tokens: int = field(default=128, metadata={"help": "cap on each request's output length"})
    min_tokens: int = field(default=4, metadata={"help": "floor on each request's output length"})
    max_prompt_tokens: int = field(default=512, metadata={"help": "longer prompts are shortened (env workloads)"})
    max_prompt_chars: int = field(default=4000, metadata={"help": "prompt text is cut to this many characters"})
    ignore_eos: bool = field(default=True, metadata={"help": "generate exactly the planned output lengths"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature (0 = greedy)"})
    max_concurrency: int = field(default=0, metadata={"help": "most requests in flight at once (0 = unbounded)"})
    slo_ttft_s: float = field(default=5.0, metadata={"help": "TTFT SLO for goodput (seconds)",
                                                     "aliases": {"--slo-ttft-ms": 1e-3}})
    slo_tpot_s: float = field(default=0.25, metadata={"help": "TPOT SLO for goodput (seconds)",
                                                      "aliases": {"--slo-tpot-ms": 1e-3}})
    request_timeout_s: float = field(default=300.0, metadata={"help": "per-request timeout"})
    model: str = field(default="", metadata={"help": "model id to send ('' = the server's first model)"})
    seed: int = field(default=0, metadata={"help": "seed for arrivals and prompt choice"})
    output_json: str = field(default="", metadata={"help": "also write the report here"})

    def __post_init__(self) -> None:
        host = urlparse(self.url).hostname
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"the load generator only targets loopback ({', '.join(LOOPBACK_HOSTS)}), got {host!r}")
        if self.prompts not in PROMPT_SOURCES:
            raise ValueError(f"unknown prompts {self.prompts!r}; choose from {', '.join(PROMPT_SOURCES)}")
        if not self.trace and not (math.isfinite(self.request_rate) and self.request_rate > 0):
            raise ValueError("give --trace or a --request-rate > 0")
        if not (0 < self.duration_s <= MAX_DURATION_S):
            raise ValueError(f"duration_s must be in (0, {MAX_DURATION_S:g}]")
        if not (0 < self.max_requests <= MAX_REQUESTS):
            raise ValueError(f"max_requests must be in (0, {MAX_REQUESTS}]")
        for name in ("burstiness", "time_scale", "slo_ttft_s", "slo_tpot_s", "request_timeout_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a finite number > 0")
        if not 0 < self.min_tokens <= self.max_tokens:
            raise ValueError("need 0 < min_tokens <= max_tokens")
        if self.max_concurrency < 0 or self.temperature < 0:
            raise ValueError("max_concurrency and temperature must be >= 0")


@dataclass
class PlannedRequest:
    arrival_s: float
    prompt: Prompt
    max_tokens: int


@dataclass
class RequestResult:
    status: int = 0
    ttft_s: float | None = None
    e2e_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)
    num_output_tokens: int = 0
    num_prompt_tokens: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error

    @property
    def tpot_s(self) -> float | None:
        if not self.ok or self.ttft_s is None or self.num_output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.num_output_tokens - 1)


def read_trace_csv(path: Path) -> list[tuple[float, int | None]]:
    """(seconds from the first request, generated tokens or None) per row of a trace CSV."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"trace {path} has no rows")
    out = []
    for row in rows:
        if "TIMESTAMP" in row:
            stamp = datetime.strptime(row["TIMESTAMP"][:26], "%Y-%m-%d %H:%M:%S.%f").timestamp()
        elif "time_s" in row:
            stamp = float(row["time_s"])
        else:
            raise ValueError(f"trace {path} needs a TIMESTAMP or time_s column")
        generated = row.get("GeneratedTokens") or row.get("output_tokens")
        out.append((stamp, int(generated) if generated else None))
    start = out[0][0]
    return [(t - start, g) for t, g in out]


def plan_requests(cfg: LoadgenConfig) -> list[PlannedRequest]:
    """Arrival times, prompts and output lengths within `duration` (env workloads draw them)."""
    rng = np.random.default_rng(cfg.seed)
    source = PROMPT_SOURCES[cfg.prompts]
    custom_trace = cfg.trace and cfg.trace != "azure"
    if cfg.trace == "azure":
        arrival, num = "azure", cfg.max_requests
    else:
        arrival = "poisson" if cfg.burstiness == 1 else "gamma"
        num = min(cfg.max_requests, int(math.ceil(cfg.request_rate * cfg.duration_s * 2)) + 16)
    if custom_trace:
        arrival, num = "offline", min(cfg.max_requests, len(read_trace_csv(Path(cfg.trace))))
    spec = WorkloadSpec(prompts=source, arrival=arrival, rate=cfg.request_rate or 1.0, cv=cfg.burstiness,
                        time_scale=cfg.time_scale, num_requests=num,
                        output_len="trace" if cfg.trace == "azure" else "data",
                        max_new_tokens=cfg.max_tokens, min_new_tokens=cfg.min_tokens,
                        max_prompt_tokens=cfg.max_prompt_tokens)
    window = build_window(spec, rng)
    planned = [PlannedRequest(w.arrival_s, w.prompt, w.max_new_tokens) for w in window]
    if custom_trace:
        for plan, (time_s, generated) in zip(planned, read_trace_csv(Path(cfg.trace))):
            plan.arrival_s = time_s * cfg.time_scale
            if generated is not None:
                plan.max_tokens = int(min(max(generated, cfg.min_tokens), cfg.max_tokens))
    return [p for p in planned if p.arrival_s < cfg.duration_s][: cfg.max_requests]


async def _send(client: httpx.AsyncClient, cfg: LoadgenConfig, model: str, plan: PlannedRequest) -> RequestResult:
    text = plan.prompt.text[: cfg.max_prompt_chars]
    body = {"model": model, "max_tokens": plan.max_tokens, "temperature": cfg.temperature, "stream": True,
            "ignore_eos": cfg.ignore_eos, "stream_options": {"include_usage": True}}
    if plan.prompt.is_chat:
        path, body["messages"] = "/v1/chat/completions", [{"role": "user", "content": text}]
    else:
        path, body["prompt"] = "/v1/completions", text
    result = RequestResult()
    start = last = time.perf_counter()
    try:
        async with client.stream("POST", path, json=body, timeout=cfg.request_timeout_s) as response:
            result.status = response.status_code
            if response.status_code != 200:
                result.error = (await response.aread()).decode(errors="replace")[:200]
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: "):])
                if "error" in chunk:
                    result.error = chunk["error"].get("message", "error")
                    continue
                if chunk.get("usage"):
                    usage = chunk["usage"]
                    result.num_output_tokens = usage["completion_tokens"]
                    result.num_prompt_tokens = usage["prompt_tokens"]
                    result.num_draft_tokens = usage.get("num_draft_tokens", 0)
                    result.num_accepted_tokens = usage.get("num_accepted_tokens", 0)
                for choice in chunk.get("choices", []):
                    piece = choice.get("text") or (choice.get("delta") or {}).get("content")
                    if piece:
                        now = time.perf_counter()
                        if result.ttft_s is None:
                            result.ttft_s = now - start
                        else:
                            result.itl_s.append(now - last)
                        last = now
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.e2e_s = time.perf_counter() - start
    return result


async def run_load(cfg: LoadgenConfig, plans: list[PlannedRequest]) -> tuple[list[RequestResult], float]:
    limits = httpx.Limits(max_connections=cfg.max_concurrency or 1000, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=cfg.url, limits=limits) as client:
        model = cfg.model or (await client.get("/v1/models", timeout=10)).json()["data"][0]["id"]
        gate = asyncio.Semaphore(cfg.max_concurrency) if cfg.max_concurrency else None
        start = time.perf_counter()

        async def fire(plan: PlannedRequest) -> RequestResult:
            await asyncio.sleep(max(0.0, plan.arrival_s - (time.perf_counter() - start)))
            if gate is None:
                return await _send(client, cfg, model, plan)
            async with gate:
                return await _send(client, cfg, model, plan)

        results = await asyncio.gather(*(fire(p) for p in plans))
        return list(results), time.perf_counter() - start


def main(cfg: LoadgenConfig) -> dict:
    plans = plan_requests(cfg)
    if not plans:
        raise SystemExit("no request arrives within the duration; raise --duration-s or --request-rate")
    results, duration_s = asyncio.run(run_load(cfg, plans))
    report = {"config": asdict(cfg), **summarize(cfg, results, duration_s)}
    print(format_table(report))
    print(json.dumps({k: v for k, v in report.items() if k != "config"}))
    if cfg.output_json:
        Path(cfg.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output_json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    from cli.missing_data import exit_on_missing_data
    with exit_on_missing_data():
        main(parse_dataclass(LoadgenConfig, description="Load generator for the SpecRoute server (loopback only)",
                             prog="python -m serving.loadgen"))
