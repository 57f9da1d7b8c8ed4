"""`python -m serving.loadgen`: load any OpenAI-compatible server like `vllm bench serve` does.

Every request streams (SSE) so TTFT and inter-token latency are measured at the client; it
reports TTFT, TPOT, ITL and E2E latency (mean, p50, p99), request and token throughput, goodput
(requests per second that met both SLOs) and SLO attainment, as JSON and as a table. Prompts and
output lengths come from the environment's workloads (`env.workloads`), so the server is loaded
with what the router was trained on, or from the user's own JSON Lines file
(`serving.loadgen_dataset`). The target is SpecRoute's server or any other (vLLM, llama.cpp):
only OpenAI fields are required (`serving.openai_target`).

It is bounded (duration, request count, per-request timeout).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

from cli.dataclass_args import parse_dataclass
from env.arrivals import azure_window, gamma_arrivals, poisson_arrivals
from env.prompt_sources import Prompt
from env.workloads import WorkloadSpec, build_window
from serving.loadgen_dataset import DatasetError, read_prompt_file, read_trace_csv
from serving.loadgen_report import format_table, summarize
from serving.openai_target import (ENDPOINTS, RequestResult, auth_headers, fetch_model_name, request_path_and_body,
                                   send_request)

BUILTIN_DATASETS = {"specbench": "spec_bench", "spec_bench": "spec_bench", "sharegpt": "sharegpt",
                    "humaneval": "humaneval", "mt_bench": "mt_bench", "azure_code": "azure_code"}
FILE_DATASETS = ("custom", "jsonl")
MAX_DURATION_S, MAX_REQUESTS = 3600.0, 20000
__all__ = ["LoadgenConfig", "PlannedRequest", "RequestResult", "format_table", "main", "plan_requests", "run_load",
           "summarize"]


@dataclass
class LoadgenConfig:
    """Load generator settings (`python -m serving.loadgen --help`)."""

    base_url: str = field(default="http://127.0.0.1:8000", metadata={
        "help": "the OpenAI-compatible server to load, without /v1 (http or https, any host; only load servers you are "
                "allowed to load)", "aliases": ["--url"]})
    endpoint: str | None = field(default=None, metadata={"help": "API path for every request (none: chat prompts "
                                                         "to /v1/chat/completions, the others to /v1/completions)",
                                                         "choices": list(ENDPOINTS)})
    model: str = field(default="", metadata={"help": "model name sent in requests ('' = the first of GET /v1/models)"})
    api_key: str = field(default="", repr=False, metadata={"help": "sent as 'Authorization: Bearer KEY' ('' = $OPENAI_API_KEY)"})
    dataset_name: str | None = field(default=None, metadata={
        "help": "prompt source: a built-in bank, or custom/jsonl for --dataset-path (none: custom when "
                "--dataset-path is given, else sharegpt)",
        "choices": [*BUILTIN_DATASETS, *FILE_DATASETS], "aliases": ["--prompts"]})
    dataset_path: str = field(default="", metadata={
        "help": "JSON Lines prompt file: one object per line with \"prompt\" (str) or \"messages\" (chat list), "
                "optional \"max_tokens\" / \"output_len\""})
    trace: str = field(default="", metadata={"help": "'azure' (the shared Azure code trace) or a CSV path with "
                                             "TIMESTAMP (or time_s) and optionally GeneratedTokens columns"})
    request_rate: float = field(default=0.0, metadata={"help": "mean arrival rate (req/s) when no trace is given; "
                                                               "inf with --max-concurrency C: a closed loop of C clients",
                                                       "aliases": ["--rate"]})
    burstiness: float = field(default=1.0, metadata={"help": "coefficient of variation of the gaps: 1 = Poisson, >1 burstier (gamma)"})
    time_scale: float = field(default=1.0, metadata={"help": "multiplies trace timestamps (0.1 = 10x the load)"})
    duration_s: float = field(default=60.0, metadata={"help": "seconds over which requests arrive",
                                                      "aliases": ["--duration"]})
    num_prompts: int = field(default=1000, metadata={"help": "upper bound on requests sent",
                                                     "aliases": ["--max-requests"]})
    max_tokens: int = field(default=128, metadata={"help": "cap on each request's output length"})
    min_tokens: int = field(default=4, metadata={"help": "floor on each request's output length (built-in banks)"})
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
    seed: int = field(default=0, metadata={"help": "seed for arrivals and prompt choice"})
    output_json: str = field(default="", metadata={"help": "also write the report here"})

    def __post_init__(self) -> None:
        target = urlparse(self.base_url)
        if target.scheme not in ("http", "https") or not target.hostname:
            raise ValueError(f"--base-url must be an http:// or https:// URL with a host, got {self.base_url!r}")
        self.dataset_name = self.dataset_name or ("custom" if self.dataset_path else "sharegpt")
        if self.dataset_name not in (*BUILTIN_DATASETS, *FILE_DATASETS):
            raise ValueError(f"unknown dataset {self.dataset_name!r}; choose from "
                             f"{', '.join([*BUILTIN_DATASETS, *FILE_DATASETS])}")
        if self.uses_dataset_file != bool(self.dataset_path):
            raise ValueError("--dataset-path goes with --dataset-name custom (or jsonl), and only with it")
        if self.dataset_path and not Path(self.dataset_path).is_file():
            raise ValueError(f"--dataset-path {self.dataset_path} does not exist or is not a file")
        if self.endpoint not in (None, *ENDPOINTS):
            raise ValueError(f"unknown endpoint {self.endpoint!r}; choose from {', '.join(ENDPOINTS)}")
        if not self.trace and not self.request_rate > 0:
            raise ValueError("give --trace or a --request-rate > 0 (inf: a closed loop)")
        if not (0 < self.duration_s <= MAX_DURATION_S):
            raise ValueError(f"duration_s must be in (0, {MAX_DURATION_S:g}]")
        if not (0 < self.num_prompts <= MAX_REQUESTS):
            raise ValueError(f"num_prompts must be in (0, {MAX_REQUESTS}]")
        for name in ("burstiness", "time_scale", "slo_ttft_s", "slo_tpot_s", "request_timeout_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a finite number > 0")
        if not 0 < self.min_tokens <= self.max_tokens:
            raise ValueError("need 0 < min_tokens <= max_tokens")
        if self.max_concurrency < 0 or self.temperature < 0:
            raise ValueError("max_concurrency and temperature must be >= 0")

    @property
    def is_closed_loop(self) -> bool:
        """`--request-rate inf`: every request is due at once, so with `--max-concurrency C`, C clients
        each send their next request when their last one returns (vLLM's spelling of a closed loop)."""
        return not self.trace and math.isinf(self.request_rate)

    @property
    def uses_dataset_file(self) -> bool:
        return self.dataset_name in FILE_DATASETS

    @property
    def resolved_api_key(self) -> str:
        return self.api_key or os.environ.get("OPENAI_API_KEY", "")

    def to_report(self) -> dict:
        """The settings as the report records them: never the API key."""
        return {**asdict(self), "api_key": "***" if self.resolved_api_key else ""}


@dataclass
class PlannedRequest:
    arrival_s: float
    prompt: Prompt
    max_tokens: int


def _num_requests(cfg: LoadgenConfig) -> int:
    if cfg.trace == "azure":
        return cfg.num_prompts
    if cfg.trace:
        return min(cfg.num_prompts, len(read_trace_csv(Path(cfg.trace))))
    if cfg.is_closed_loop:
        return cfg.num_prompts
    return min(cfg.num_prompts, int(math.ceil(cfg.request_rate * cfg.duration_s * 2)) + 16)


def _plan_builtin(cfg: LoadgenConfig, rng: np.random.Generator, num: int) -> list[PlannedRequest]:
    """A window of a built-in prompt bank, drawn by the environment's workloads."""
    arrival = "azure" if cfg.trace == "azure" else "offline" if cfg.trace or cfg.is_closed_loop else \
        "poisson" if cfg.burstiness == 1 else "gamma"
    rate = cfg.request_rate if cfg.request_rate and math.isfinite(cfg.request_rate) else 1.0
    spec = WorkloadSpec(prompts=BUILTIN_DATASETS[cfg.dataset_name], arrival=arrival, rate=rate,
                        cv=cfg.burstiness, time_scale=cfg.time_scale, num_requests=num,
                        output_len="trace" if cfg.trace == "azure" else "data",
                        max_new_tokens=cfg.max_tokens, min_new_tokens=cfg.min_tokens,
                        max_prompt_tokens=cfg.max_prompt_tokens)
    return [PlannedRequest(w.arrival_s, w.prompt, w.max_new_tokens) for w in build_window(spec, rng)]


def _plan_file(cfg: LoadgenConfig, rng: np.random.Generator, num: int) -> list[PlannedRequest]:
    """The prompt file's prompts in file order (cycling when more requests arrive than it has);
    a line's max_tokens / output_len is its output length, capped by --max-tokens."""
    prompts = read_prompt_file(cfg.dataset_path)
    if cfg.trace == "azure":
        times = azure_window(rng, num, cfg.time_scale)[0]
    elif cfg.trace or cfg.is_closed_loop:
        times = np.zeros(num)                       # a CSV's times are set by plan_requests
    elif cfg.burstiness == 1:
        times = poisson_arrivals(rng, num, cfg.request_rate)
    else:
        times = gamma_arrivals(rng, num, cfg.request_rate, cfg.burstiness)
    chosen = [prompts[i % len(prompts)] for i in range(num)]
    return [PlannedRequest(float(t), p, min(p.reference_tokens or cfg.max_tokens, cfg.max_tokens))
            for t, p in zip(times, chosen)]


def plan_requests(cfg: LoadgenConfig) -> list[PlannedRequest]:
    """Arrival times, prompts and output lengths within `duration_s`, at most `num_prompts`.

    Raises DatasetError (one line, naming the line) for a bad --dataset-path file.
    """
    rng = np.random.default_rng(cfg.seed)
    num = _num_requests(cfg)
    planned = _plan_file(cfg, rng, num) if cfg.uses_dataset_file else _plan_builtin(cfg, rng, num)
    if cfg.trace and cfg.trace != "azure":
        for plan, (time_s, generated) in zip(planned, read_trace_csv(Path(cfg.trace))):
            plan.arrival_s = time_s * cfg.time_scale
            if generated is not None:
                plan.max_tokens = int(min(max(generated, cfg.min_tokens), cfg.max_tokens))
    return [p for p in planned if p.arrival_s < cfg.duration_s][: cfg.num_prompts]


def _request_body(cfg: LoadgenConfig, model: str, plan: PlannedRequest) -> tuple[str, dict]:
    path, body = request_path_and_body(plan.prompt, cfg.endpoint or "", cfg.max_prompt_chars)
    body.update(model=model, max_tokens=plan.max_tokens, temperature=cfg.temperature, stream=True,
                stream_options={"include_usage": True})
    if cfg.ignore_eos:
        body["ignore_eos"] = True               # vLLM's and llama.cpp's extension; OpenAI's API has none
    return path, body


def _client(cfg: LoadgenConfig) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=cfg.max_concurrency or 1000, max_keepalive_connections=64)
    return httpx.AsyncClient(base_url=cfg.base_url, limits=limits, headers=auth_headers(cfg.resolved_api_key))


async def resolve_model(cfg: LoadgenConfig) -> str:
    """--model, or the first model the server lists."""
    if cfg.model:
        return cfg.model
    async with _client(cfg) as client:
        return await fetch_model_name(client)


async def run_load(cfg: LoadgenConfig, plans: list[PlannedRequest],
                   model: str = "") -> tuple[list[RequestResult], float]:
    """Send every planned request at its arrival time (no more than `max_concurrency` in flight,
    the others waiting in plan order); the results in plan order and the wall time."""
    async with _client(cfg) as client:
        model = model or cfg.model or await fetch_model_name(client)
        gate = asyncio.Semaphore(cfg.max_concurrency) if cfg.max_concurrency else None
        start = time.perf_counter()

        async def fire(plan: PlannedRequest) -> RequestResult:
            await asyncio.sleep(max(0.0, plan.arrival_s - (time.perf_counter() - start)))
            path, body = _request_body(cfg, model, plan)
            if gate is None:
                return await send_request(client, path, body, cfg.request_timeout_s)
            async with gate:
                return await send_request(client, path, body, cfg.request_timeout_s)

        results = await asyncio.gather(*(fire(p) for p in plans))
        return list(results), time.perf_counter() - start


def main(cfg: LoadgenConfig) -> dict:
    plans = plan_requests(cfg)
    if not plans:
        raise SystemExit("no request arrives within the duration; raise --duration-s or --request-rate")
    model = asyncio.run(resolve_model(cfg))
    results, duration_s = asyncio.run(run_load(cfg, plans, model))
    report = {"config": cfg.to_report(), **summarize(cfg, results, duration_s, model)}
    print(format_table(report))
    print(json.dumps({k: v for k, v in report.items() if k != "config"}))
    if cfg.output_json:
        Path(cfg.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output_json).write_text(json.dumps(report, indent=2) + "\n")
    return report


PROG = "python -m serving.loadgen"


def cli(argv: list[str] | None = None) -> dict:
    """The command line: a bad prompt file or an unreachable server is one `error:` line, exit 2."""
    cfg = parse_dataclass(LoadgenConfig, argv, prog=PROG, description=(
        "Load generator for OpenAI-compatible servers (SpecRoute, vLLM, llama.cpp), like `vllm bench serve`. "
        "Only load a server you are allowed to load."))
    try:
        return main(cfg)
    except (DatasetError, httpx.HTTPError, ValueError) as error:
        where = "" if isinstance(error, DatasetError) else f"{cfg.base_url}: "
        print(f"{PROG}: error: {where}{' '.join(str(error).split())}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    from cli.missing_data import exit_on_missing_data
    with exit_on_missing_data():
        cli()
