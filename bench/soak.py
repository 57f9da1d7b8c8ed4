"""Soak: the real server on loopback under moderate load for minutes; every request must be answered
and the server's memory must not grow.

The server runs as its own process (`python -m serving`); the load generator replays Poisson
arrivals against it while this script samples the server's RSS. After a warm-up (caches,
allocator pools and the KV cache reach their working size) the RSS may grow by less than
`max_rss_growth`. Exit status 1 when a check fails. Writes bench/results/<name>.json and .md.

    .venv/bin/python -m bench.soak                          # 10 minutes at 0.15 req/s
    .venv/bin/python -m bench.soak --duration-s 120 --output-name serving_soak_short
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

import httpx
import psutil

from bench.served_args import ServedArgs
from cli.dataclass_args import parse_dataclass
from cli.results import RESULTS_DIR, machine_info, markdown_table, publish_results
from serving.loadgen import LoadgenConfig, plan_requests, run_load, summarize
from serving.server_process import ServerProcess

logger = logging.getLogger("bench")


@dataclass
class SoakArgs(ServedArgs):
    """Run the server under moderate load for minutes; check answers and memory growth."""

    router: str = field(default="learned", metadata={"help": "server --router"})
    duration_s: float = field(default=600.0, metadata={"help": "seconds over which requests arrive",
                                                       "aliases": {"--minutes": 60.0}})
    request_rate: float = field(default=0.15, metadata={
        "help": "Poisson arrival rate (req/s): moderate for the machine", "aliases": ["--rate"]})
    prompts: str = field(default="sharegpt", metadata={"help": "prompt source"})
    max_tokens: int = field(default=32, metadata={"help": "cap on output length"})
    warmup_fraction: float = field(default=0.2, metadata={"help": "share of the run before the RSS baseline"})
    sample_every_s: float = field(default=2.0, metadata={"help": "RSS sampling period"})
    max_rss_growth: float = field(default=0.05, metadata={"help": "largest allowed RSS growth after warm-up"})
    seed: int = field(default=0, metadata={"help": "arrival and prompt seed"})
    output_name: str = field(default="serving_soak", metadata={"help": "writes bench/results/<name>.json and .md"})

    def __post_init__(self) -> None:
        if not 0 < self.duration_s <= 3600 or not self.request_rate > 0:
            raise ValueError("duration_s must be in (0, 3600] and request_rate > 0")
        if not 0 < self.warmup_fraction < 1 or not self.max_rss_growth > 0 or not self.sample_every_s > 0:
            raise ValueError("warmup_fraction must be in (0, 1); max_rss_growth and sample_every_s > 0")


def main(args: SoakArgs) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    server_args = [*args.server_flags(), "--router", args.router,
                   "--decision-log", str(RESULTS_DIR / "logs" / f"{args.output_name}-decisions.jsonl")]
    duration_s = args.duration_s
    samples: list[tuple[float, float]] = []          # (seconds since load start, RSS MiB)
    with ServerProcess(server_args, RESULTS_DIR / "logs" / f"{args.output_name}.log") as server:
        cfg = LoadgenConfig(base_url=server.url, request_rate=args.request_rate, duration_s=duration_s, dataset_name=args.prompts,
                            max_tokens=args.max_tokens, max_prompt_tokens=args.max_prompt_tokens,
                            max_prompt_chars=4 * args.max_prompt_tokens, seed=args.seed,
                            num_prompts=int(args.request_rate * duration_s * 2) + 16)
        plans = plan_requests(cfg)
        outcome: dict = {}
        load = threading.Thread(target=lambda: outcome.update(zip(("results", "duration_s"),
                                                                  asyncio.run(run_load(cfg, plans)))))
        process = psutil.Process(server.pid)
        start = time.monotonic()
        load.start()
        while load.is_alive():
            samples.append((time.monotonic() - start, process.memory_info().rss / 2 ** 20))
            load.join(args.sample_every_s)
        samples.append((time.monotonic() - start, process.memory_info().rss / 2 ** 20))
        health = httpx.get(f"{server.url}/health", timeout=10).status_code
        ready = httpx.get(f"{server.url}/ready", timeout=10).json()
        exit_code = server.stop()
    report = summarize(cfg, outcome["results"], outcome["duration_s"])
    after_warmup = [rss for t, rss in samples if t >= args.warmup_fraction * duration_s]
    window = max(1, len(after_warmup) // 10)
    baseline = statistics.median(after_warmup[:window])
    final = statistics.median(after_warmup[-window:])
    growth = (final - baseline) / baseline
    checks = {
        "every_request_answered": report["completed"] == report["num_requests"] > 0,
        "no_request_in_flight_at_end": ready["num_in_flight"] == 0 and health == 200,
        "rss_growth_below_limit": growth < args.max_rss_growth,
        "clean_exit_on_sigterm": exit_code == 0,
    }
    data = {"args": asdict(args), "checks": checks, "passed": all(checks.values()),
            "rss_mib": {"baseline": baseline, "final": final, "peak": max(r for _, r in samples), "growth": growth},
            "rss_samples": samples, "report": report, "router": ready["router"], "machine": machine_info()}
    rows = [[name, "pass" if ok else "FAIL"] for name, ok in checks.items()]
    markdown = "\n\n".join([
        markdown_table(["check", "result"], rows),
        f"{report['num_requests']} requests over {args.duration_s / 60:g} min at {args.request_rate:g} req/s: "
        f"{report['completed']} answered, {report['rejected_429']} rejected, {report['failed']} failed; "
        f"RSS {baseline:.0f} -> {final:.0f} MiB after warm-up ({100 * growth:+.2f} %), peak "
        f"{data['rss_mib']['peak']:.0f} MiB; TPOT p50 {report['tpot_ms']['p50'] or 0:.0f} ms, "
        f"TTFT p99 {report['ttft_ms']['p99'] or 0:.0f} ms."])
    publish_results(args.output_name, data, markdown)
    return data


if __name__ == "__main__":
    from cli.missing_data import exit_on_missing_data
    with exit_on_missing_data():
        sys.exit(0 if main(parse_dataclass(SoakArgs, description=__doc__.split("\n")[0]))["passed"] else 1)
