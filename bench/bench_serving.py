"""Serving benchmark: the routers against every fixed configuration, behind the real server.

Configurations: the learned policy (guarded, cost model as fallback), the cost model alone, and
every decision the cost model may pick (plain decoding and each static chain@K, read from the
cost-model server's /ready), each in its own `python -m serving` process, all up at once and
measured one at a time. Cells: closed loops of 1, 4, 8 and 16 clients (each client sends its next
request when its last returns; a fixed count per cell) and Poisson arrivals at three rates, by
default fractions of plain decoding's measured capacity, the last one past it (saturating).
Every cell runs `--repeats` times, interleaved: for each repeat, for each cell, every
configuration in an order rotated per cell. Prompts: Spec-Bench from ../shared/data. The load
generator is `serving.loadgen`. Summary: bench/serving_summary.py. Writes bench/results/<name>.json and .md.

    .venv/bin/python -m bench.bench_serving                            # the full run, capped at --max-minutes
    .venv/bin/python -m bench.bench_serving --fixed actions             # the policy's 14 actions: about half as long
    .venv/bin/python -m bench.bench_serving --smoke --output-name serving_smoke     # ~2 minutes

On 2 cores (plain: ~21 tok/s alone, ~65 tok/s at 16 clients) one configuration takes ~50 s per
repeat of the 7 cells, so ~28 configurations x 2 repeats need ~50 minutes beside ~5 of start-up:
past the default cap, the last runs of the second repeat are cut and the summary uses what ran.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from bench.common import check_output_name
from bench.plots import plot_results
from bench.served_args import ServedArgs
from bench.serving_cells import MIN_CLOSED_LOOP_REQUESTS, Cell, plan_cells, resolve_rates
from bench.serving_report import aggregate_rows, render_markdown
from bench.serving_servers import ServedConfig, ServerFleet, metrics_delta, router_status, scrape_router_metrics
from bench.serving_summary import ROUTERS, histogram_quantile, summarize_runs
from cli.dataclass_args import parse_dataclass
from cli.results import RESULTS_DIR, machine_info, publish_results
from engine.config import engine_field
from engine.decision import Decision
from engine.precision import PrecisionArgs
from router.checkpoint import CheckpointError, read_manifest
from router.config import canonical_policy_name
from serving.loadgen import LoadgenConfig, plan_requests, run_load, summarize

logger = logging.getLogger("bench")


def _numbers(text: str, kind=float) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


@dataclass
class BenchServingArgs(PrecisionArgs, ServedArgs):
    """The routers vs plain decoding and every static chain@K, behind the real server."""

    num_threads: int = field(default=2, metadata={"help": "torch threads per server (one server is measured at a time)"})
    draft: str = field(default="checkpoints/draft", metadata={"help": "trained draft (used when it exists)"})
    eagle: str = field(default="checkpoints/eagle", metadata={"help": "EAGLE head (used when it exists and fits)"})
    quantized_levels: str = engine_field("quantized_levels")
    routers: str = field(default=",".join(ROUTERS), metadata={"help": "comma-separated subset of learned, cost-model"})
    fixed: str = field(default="all", metadata={
        "help": "fixed configurations: 'all' (every decision the cost model may pick, plain included), 'actions' "
                "(the learned policy's action list, from --policy's manifest) or a comma list such as plain,ngram>target@4"})
    concurrencies: str = field(default="1,4,8,16", metadata={"help": "closed-loop cells: clients each"})
    requests_per_client: int = field(default=2, metadata={
        "help": f"a closed-loop cell sends this many requests per client (at least {MIN_CLOSED_LOOP_REQUESTS})"})
    request_rates: str = field(default="", metadata={
        "help": "Poisson cells in req/s ('' = --capacity-fractions of plain's closed-loop capacity)", "aliases": ["--rates"]})
    capacity_fractions: str = field(default="0.3,0.7,2.0", metadata={
        "help": "Poisson rates as fractions of plain's requests/s at the largest concurrency (> 1 saturates)"})
    poisson_duration_s: float = field(default=5.0, metadata={"help": "seconds of arrivals per Poisson cell"})
    prompts: str = field(default="specbench", metadata={"help": "prompt bank (serving.loadgen's datasets)"})
    max_tokens: int = field(default=32, metadata={"help": "every request's output length (ignore_eos)"})
    repeats: int = field(default=2, metadata={"help": "interleaved repeats of every cell"})
    slo_tpot_s: float = field(default=0.25, metadata={"help": "TPOT SLO in seconds (server and goodput)",
                                                      "aliases": {"--slo-tpot-ms": 1e-3}})
    slo_ttft_s: float = field(default=5.0, metadata={"help": "TTFT SLO in seconds (server and goodput)",
                                                     "aliases": {"--slo-ttft-ms": 1e-3}})
    profile_budget_s: float = field(default=30.0, metadata={"help": "server --profile-budget-s"})
    min_free_gb: float = field(default=1.5, metadata={
        "help": "a server starts only while MemAvailable exceeds the largest server so far plus this"})
    seed: int = field(default=0, metadata={"help": "prompt and arrival seed (repeat r uses seed + r)"})
    max_minutes: float = field(default=42.0, metadata={
        "help": "no run starts after this many minutes (start-up included); the results so far are written"})
    smoke: bool = field(default=False, metadata={
        "help": "shrink everything for a quick check: one concurrency, one (saturating) rate, plain and 2 statics, "
                "8 tokens, 2 s of arrivals (2 repeats kept)"})
    output_name: str = field(default="serving", metadata={"help": "writes <results-dir>/<name>.json and .md"})
    results_dir: str = field(default="", metadata={"help": "where the results go ('' = bench/results)"})

    def __post_init__(self) -> None:
        self.routers = canonical_policy_name(self.routers)
        if self.smoke:
            self.concurrencies = self.concurrencies.split(",")[0]
            self.capacity_fractions = self.capacity_fractions.split(",")[-1]
            self.request_rates = ",".join(self.request_rates.split(",")[-1:])
            self.max_tokens, self.poisson_duration_s = 8, 2.0
        unknown = sorted(set(self.router_list) - set(ROUTERS))
        if unknown:
            raise ValueError(f"unknown routers {unknown}; choose from {', '.join(ROUTERS)}")
        if self.fixed == "all" and "cost-model" not in self.router_list:
            raise ValueError("--fixed all reads the cost model's choices: keep cost-model in --routers, or list them")
        try:
            self.fixed_list        # every name parses (ValueError naming the form); 'actions' has a manifest
        except CheckpointError as exc:
            raise ValueError(f"--fixed actions reads the policy's manifest: {exc}") from None
        numbers = [*self.concurrency_list, *self.rate_list, *self.fraction_list]
        if any(not (math.isfinite(x) and x > 0) for x in numbers) or not self.concurrency_list and not self.rate_list:
            raise ValueError("concurrencies, rates and fractions must be finite and > 0, with a concurrency unless "
                             "--request-rates are given")
        if min(self.repeats, self.requests_per_client, self.max_tokens) < 1 or self.poisson_duration_s <= 0 \
                or self.max_minutes <= 0:
            raise ValueError("repeats, requests_per_client, max_tokens, poisson_duration_s and max_minutes must be > 0")
        check_output_name(self.output_name)

    @property
    def router_list(self) -> list[str]:
        return [r.strip() for r in self.routers.split(",") if r.strip()]

    @property
    def fixed_list(self) -> list[str]:
        """The fixed configurations by name ([] for 'all': the cost-model server lists them)."""
        if self.fixed == "actions":
            return [a.decision.label for a in read_manifest(self.policy).actions]
        return [] if self.fixed == "all" else [Decision.parse(x.strip()).label for x in self.fixed.split(",") if x.strip()]

    @property
    def concurrency_list(self) -> list[int]:
        return _numbers(self.concurrencies, int)

    @property
    def rate_list(self) -> list[float]:
        return _numbers(self.request_rates)

    @property
    def fraction_list(self) -> list[float]:
        return _numbers(self.capacity_fractions)

    def common_flags(self) -> list[str]:
        return [*self.server_flags(), "--slo-tpot-s", str(self.slo_tpot_s), "--slo-ttft-s", str(self.slo_ttft_s),
                "--profile-budget-s", str(self.profile_budget_s),
                *(arg for key in ("dtype", "kernel", "weights", "device") for arg in (f"--{key}", getattr(self, key)))]


def start_fleet(args: BenchServingArgs, fleet: ServerFleet) -> list[ServedConfig]:
    """Start the cost model's server first (its /ready lists the fixed configurations for 'all'),
    then the learned one, then plain and the statics. Returns every configuration, started or not."""
    levels = dict(draft=args.draft, eagle=args.eagle, quantized_levels=args.quantized_levels)
    routers = [ServedConfig(name) for name in sorted(args.router_list, key=lambda n: n != "cost-model")]
    fixed = args.fixed_list
    for config in routers:
        server = fleet.start(config, config.level_flags(**levels))
        if config.name == "cost-model" and args.fixed == "all":
            if server is None:
                raise RuntimeError(f"--fixed all needs the cost-model server: {fleet.skipped['cost-model']}")
            fixed = router_status(server.url)["candidates"]
    if args.smoke:
        fixed = [label for label in fixed if label == "plain"] + [label for label in fixed if label != "plain"][:2]
    statics = [ServedConfig(label) for label in dict.fromkeys(fixed)]
    for config in statics:
        fleet.start(config, config.level_flags(**levels))
    return routers + statics


def measure(url: str, config: ServedConfig, cell: Cell, cfg: LoadgenConfig, plans: list, repeat: int) -> dict:
    """One run: replay the planned requests against one server; its report and, for a router, the
    decisions it took meanwhile by source."""
    before = scrape_router_metrics(url) if config.is_router else None
    cfg = dataclasses.replace(cfg, base_url=url)
    results, duration_s = asyncio.run(run_load(cfg, plans))
    run = {"cell": cell.name, "config": config.name, "repeat": repeat, "report": summarize(cfg, results, duration_s)}
    if before is not None:
        run["routing"] = {"by_source": metrics_delta(scrape_router_metrics(url), before)["by_source"]}
    return run


def run_cells(args: BenchServingArgs, fleet: ServerFleet, configs: list[ServedConfig], deadline: float,
              started: float) -> tuple[list[dict], list[Cell], str, str]:
    """Every repeat of every cell against every configuration that started, interleaved; stops at
    the deadline (or Ctrl-C). Returns the runs, the cells, how the rates were set, why it stopped."""
    live = [c for c in configs if c.name in fleet.servers]
    cells = plan_cells(args)
    runs, rates_note, stopped = [], "fixed by --request-rates", ""
    total = args.repeats * len(cells) * len(live)
    if not live:
        return runs, cells, rates_note, "no server started"
    first = time.monotonic()
    try:
        for repeat in range(args.repeats):
            for i, cell in enumerate(cells):
                if not cell.clients and not cell.rate:
                    rates_note = resolve_rates(cells, runs)
                cfg = cell.loadgen(args, repeat)
                plans = plan_requests(cfg)
                shift = (repeat * len(cells) + i) % max(len(live), 1)
                for config in live[shift:] + live[:shift]:
                    if time.monotonic() > deadline:
                        raise TimeoutError
                    try:
                        run = measure(fleet.servers[config.name].url, config, cell, cfg, plans, repeat)
                    except httpx.HTTPError as exc:      # the server died: the others go on without it
                        fleet.skipped[config.name] = f"stopped answering at r{repeat} {cell.name}: {exc!r}"
                        logger.warning("dropping %s: %s", config.name, fleet.skipped[config.name])
                        live.remove(config)
                        continue
                    runs.append(run)
                    report = run["report"]
                    per_run = (time.monotonic() - first) / len(runs)
                    logger.info("[%d/%d %.1f min, ~%.0f min to go] r%d %-16s %-26s %7.1f tok/s  TPOT p50 %s ms  %d/%d ok",
                                len(runs), total, (time.monotonic() - started) / 60, per_run * (total - len(runs)) / 60,
                                repeat, cell.name, config.name,
                                report["output_throughput"], _fmt(report["tpot_ms"]["p50"]), report["completed"],
                                report["num_requests"])
    except TimeoutError:
        stopped = f"--max-minutes {args.max_minutes:g} reached"
        logger.warning("time budget spent after %d of %d runs: writing what was measured", len(runs), total)
    except KeyboardInterrupt:
        stopped = "interrupted"
    except RuntimeError as exc:            # no capacity to set the Poisson rates from
        stopped = str(exc)
    return runs, cells, rates_note, stopped


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def decision_p99_ms(fleet: ServerFleet, baseline: dict[str, dict]) -> dict[str, float | None]:
    """Each router server's p99 decision time over the measured runs (warm-up excluded)."""
    out = {}
    for name, before in baseline.items():
        try:
            buckets = metrics_delta(scrape_router_metrics(fleet.servers[name].url), before)["decision_buckets"]
        except httpx.HTTPError:
            buckets = []
        p99 = histogram_quantile(buckets, 0.99)
        out[name] = None if p99 is None else p99 * 1e3
    return out


def main(args: BenchServingArgs) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.monotonic()
    deadline = started + 60 * args.max_minutes
    results_dir = Path(args.results_dir) if args.results_dir else RESULTS_DIR
    fleet = ServerFleet(args.common_flags(), results_dir / "logs", args.output_name, args.min_free_gb)
    try:
        configs = start_fleet(args, fleet)
        baseline = {c.name: scrape_router_metrics(fleet.servers[c.name].url) for c in configs
                    if c.is_router and c.name in fleet.servers}
        runs, cells, rates_note, stopped = run_cells(args, fleet, configs, deadline, started)
        p99 = decision_p99_ms(fleet, baseline)
    finally:
        fleet.stop_all()
    machine = machine_info()
    live = [c.name for c in configs if c.name in fleet.servers]
    data = {"summary": summarize_runs(runs, p99, machine["cpu"]), "args": asdict(args),
            "configs": [c.name for c in configs], "cells": [asdict(c) | {"name": c.name} for c in cells],
            "poisson_rates_note": rates_note, "skipped": fleet.skipped,
            "servers": {n: {"rss_gb": fleet.rss_gb[n], "start_s": fleet.start_s[n]} for n in live},
            "stopped_early": stopped, "num_runs": len(runs), "num_planned_runs": args.repeats * len(cells) * len(live),
            "rows": aggregate_rows(runs), "runs": runs, "machine": machine, "wall_s": time.monotonic() - started}
    json_path, _ = publish_results(args.output_name, data, render_markdown(data), args.results_dir)
    plot_results(data, json_path)
    return data


if __name__ == "__main__":
    from cli.missing_data import exit_on_missing_data
    with exit_on_missing_data():
        main(parse_dataclass(BenchServingArgs, description=__doc__.split("\n")[0]))
