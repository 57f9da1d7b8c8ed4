"""Serving benchmark: the embedded model behind the real server, one router per server process.

Routers: the learned policy (guarded, cost model as fallback), the cost model alone, the best
static (chain, K) and no speculation. Workloads: the Azure code trace (time-scaled) and
Poisson arrivals of Spec-Bench prompts at three rates. Each router has its own server process
(`python -m serving --router ...`, all loaded first, measured one at a time); the load
generator (`serving.loadgen`) replays the same planned requests against each. "Best static" is picked first by an offline calibration: the
candidate (chain, K) with the highest greedy tokens/s on a few prompts of both workloads.
Writes bench/results/<name>.json and .md.

    .venv/bin/python -m bench.bench_serving                       # default run (~10 minutes)
    .venv/bin/python -m bench.bench_serving --duration-s 5 --request-rates 0.5 --routers cost-model,plain \
        --output-name serving_smoke                              # smoke run
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from dataclasses import asdict, dataclass, field

from bench.common import check_output_name
from bench.plots import plot_results
from bench.served_args import ServedArgs
from cli.dataclass_args import parse_dataclass
from cli.results import RESULTS_DIR, machine_info, markdown_table, publish_results
from engine.decision import Decision
from engine.precision import PrecisionArgs
from router.config import canonical_policy_name
from serving.loadgen import LoadgenConfig, plan_requests, run_load, summarize
from serving.server_process import ServerProcess

ROUTERS = ("learned", "cost-model", "static", "plain")
logger = logging.getLogger("bench")


@dataclass
class BenchServingArgs(PrecisionArgs, ServedArgs):
    """Learned router vs cost model vs best static vs no speculation, behind the real server."""

    draft: str = field(default="checkpoints/draft", metadata={"help": "trained draft (used when it exists)"})
    routers: str = field(default=",".join(ROUTERS), metadata={
        "help": "comma-separated subset of " + ", ".join(ROUTERS) + " (cost_model is accepted)"})
    static: str = field(default="auto", metadata={"help": "'auto' (offline calibration) or a fixed chain@K"})
    request_rates: str = field(default="0.1,0.3,1.5", metadata={
        "help": "Poisson arrival rates (req/s); the default's last one saturates the server", "aliases": ["--rates"]})
    trace_time_scale: float = field(default=12.0, metadata={"help": "Azure trace time scale (12 = 1/12 of its load)"})
    duration_s: float = field(default=20.0, metadata={"help": "seconds of arrivals per workload"})
    prompts: str = field(default="specbench", metadata={"help": "prompts of the Poisson workloads"})
    max_tokens: int = field(default=24, metadata={"help": "cap on output length per request"})
    slo_tpot_s: float = field(default=0.25, metadata={"help": "TPOT SLO in seconds (server and goodput)",
                                                      "aliases": {"--slo-tpot-ms": 1e-3}})
    slo_ttft_s: float = field(default=5.0, metadata={"help": "TTFT SLO in seconds (server and goodput)",
                                                     "aliases": {"--slo-ttft-ms": 1e-3}})
    calibration_prompts: int = field(default=1, metadata={"help": "prompts per workload for the static calibration"})
    seed: int = field(default=0, metadata={"help": "arrival and prompt seed (same plan for every router)"})
    max_minutes: float = field(default=12.0, metadata={"help": "stop starting new runs after this"})
    output_name: str = field(default="serving", metadata={"help": "writes bench/results/<name>.json and .md"})

    def __post_init__(self) -> None:
        self.routers = canonical_policy_name(self.routers)
        unknown = sorted(set(self.router_list) - set(ROUTERS))
        if unknown or not self.router_list:
            raise ValueError(f"unknown routers {unknown}; choose from {', '.join(ROUTERS)}")
        if self.static != "auto":
            Decision.parse(self.static)
        if any(r <= 0 for r in self.rate_list) or self.duration_s <= 0 or self.max_minutes <= 0:
            raise ValueError("request_rates, duration_s and max_minutes must be > 0")
        check_output_name(self.output_name)

    @property
    def router_list(self) -> list[str]:
        return [r.strip() for r in self.routers.split(",") if r.strip()]

    @property
    def rate_list(self) -> list[float]:
        return [float(r) for r in self.request_rates.split(",") if r.strip()]


def workloads(args: BenchServingArgs, url: str) -> dict[str, LoadgenConfig]:
    common = dict(base_url=url, duration_s=args.duration_s, max_tokens=args.max_tokens, max_prompt_tokens=args.max_prompt_tokens,
                  max_prompt_chars=4 * args.max_prompt_tokens, slo_ttft_s=args.slo_ttft_s,
                  slo_tpot_s=args.slo_tpot_s, seed=args.seed)
    loads = {f"azure-code x1/{args.trace_time_scale:g}": LoadgenConfig(trace="azure", time_scale=args.trace_time_scale,
                                                                        dataset_name="azure_code", **common)}
    for rate in args.rate_list:
        loads[f"{args.prompts} poisson {rate:g}/s"] = LoadgenConfig(request_rate=rate, dataset_name=args.prompts, **common)
    return loads


def calibrate_static(args: BenchServingArgs) -> tuple[str, dict]:
    """The candidate (chain, K) with the most greedy tokens/s offline on both workloads' prompts."""
    from bench.bench_models import draft_spec, load_bench_model, report_missing_draft
    from engine import Engine, EngineConfig, SamplingParams, StaticRouter
    from env.real_backend import encode_prompt
    from serving.launch import default_actions

    engine = Engine.from_pretrained(load_bench_model(args.model, args.num_threads),
                                    drafts=[draft_spec(args.draft, required=False)],
                                    config=EngineConfig(max_model_len=2048, **args.precision_kwargs()))
    report_missing_draft(engine)
    candidates = [d for d in default_actions(engine) if not d.is_plain]     # the server's actions, each once
    prompts = []
    for cfg in workloads(args, "http://127.0.0.1:1").values():
        prompts += [p.prompt for p in plan_requests(cfg)[: args.calibration_prompts]]
        if len(prompts) >= 2 * args.calibration_prompts:
            break
    ids = [encode_prompt(engine, p, args.max_prompt_tokens, 2048 - args.max_tokens - 1) for p in prompts]
    params = SamplingParams(max_tokens=args.max_tokens, ignore_eos=True)
    speeds = {}
    for decision in candidates:
        engine.set_router(StaticRouter(decision))
        start = time.perf_counter()
        outputs = engine.generate(ids, params)
        speeds[decision.label] = sum(len(o.output_token_ids) for o in outputs) / (time.perf_counter() - start)
        logger.info("calibration %-22s %6.1f tok/s", decision.label, speeds[decision.label])
    best = max(speeds, key=speeds.get)
    return best, speeds


def scrape_routing(url: str) -> dict:
    """Decisions by source and by chosen chain@K from the server's /metrics."""
    import httpx
    by_source: dict[str, float] = {}
    by_choice: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if not line.startswith("specroute:router_decisions_total{"):
            continue
        labels = dict(part.split("=", 1) for part in line[line.index("{") + 1: line.index("}")].split(","))
        labels = {k: v.strip('"') for k, v in labels.items()}
        count = float(line.rsplit(" ", 1)[1])
        by_source[labels["source"]] = by_source.get(labels["source"], 0) + count
        choice = Decision.parse(f"{labels['chain']}@{labels['k']}").label
        by_choice[choice] = by_choice.get(choice, 0) + count
    return {"by_source": by_source, "by_choice": by_choice}


def _difference(after: dict, before: dict) -> dict:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0) > 0}


def server_for(args: BenchServingArgs, router: str, static: str) -> ServerProcess:
    flag = {"learned": "learned", "cost-model": "cost-model", "static": static, "plain": "plain"}[router]
    server_args = [*args.server_flags(), "--draft", args.draft, "--router", flag,
                   "--slo-tpot-s", str(args.slo_tpot_s), "--slo-ttft-s", str(args.slo_ttft_s),
                   *(arg for key in ("dtype", "kernel", "weights", "device") for arg in (f"--{key}", getattr(args, key))),
                   "--decision-log", str(RESULTS_DIR / "logs" / f"{args.output_name}-{router}-decisions.jsonl")]
    return ServerProcess(server_args, RESULTS_DIR / "logs" / f"{args.output_name}-{router}.log", ready_timeout_s=900)


def run_workload(server: ServerProcess, router: str, name: str, cfg: LoadgenConfig) -> dict:
    """Replay one workload against one router's server; the report plus what the router chose."""
    import httpx
    cfg = dataclasses.replace(cfg, base_url=server.url)
    status = httpx.get(f"{server.url}/ready", timeout=10).json()["router"]
    before = scrape_routing(server.url)
    results, duration_s = asyncio.run(run_load(cfg, plan_requests(cfg)))
    report = summarize(cfg, results, duration_s)
    after = scrape_routing(server.url)
    routing = {"by_source": _difference(after["by_source"], before["by_source"]),
               "by_choice": _difference(after["by_choice"], before["by_choice"])}
    logger.info("%-26s %-10s %5.2f req/s  TPOT p50 %s ms  goodput %.2f", name, router,
                report["request_throughput"], _fmt(report["tpot_ms"]["p50"]), report["goodput_rps"])
    return {"workload": name, "router": router, "server_router": status, "routing": routing, "report": report}


def run_all(args: BenchServingArgs, static: str, deadline: float) -> list[dict]:
    """Every router's server is loaded (they idle while another is measured); then each
    workload runs against every router, the router order rotated per workload so slow drift in
    machine load does not always hit the same router."""
    routers = args.router_list
    servers = {router: server_for(args, router, static) for router in routers}
    rows = []
    try:
        for server in servers.values():     # one at a time: loading several at once thrashes 2 cores
            server.start()
        for i, (name, cfg) in enumerate(workloads(args, "http://127.0.0.1:1").items()):
            for router in routers[i % len(routers):] + routers[: i % len(routers)]:
                if time.monotonic() > deadline:
                    logger.warning("time budget spent: skipping %s / %s", name, router)
                    continue
                rows.append(run_workload(servers[router], router, name, cfg))
    finally:
        for server in servers.values():
            server.stop()
    order = {name: i for i, name in enumerate(workloads(args, "http://127.0.0.1:1"))}
    return sorted(rows, key=lambda r: (order[r["workload"]], routers.index(r["router"])))


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def render_markdown(args: BenchServingArgs, rows: list[dict], static: str) -> str:
    headers = ["workload", "router", "req/s", "out tok/s", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms",
               "TPOT p99 ms", "ITL p50 ms", "goodput req/s", "SLO attain.", "accept.", "learned %", "top choice"]
    table = []
    for row in rows:
        r, routing = row["report"], row["routing"]
        total = sum(routing["by_source"].values())
        learned = 100 * routing["by_source"].get("learned", 0) / total if total else None
        top = max(routing["by_choice"], key=routing["by_choice"].get) if routing["by_choice"] else None
        table.append([row["workload"], row["router"] if row["router"] != "static" else f"static {static}",
                      r["request_throughput"], r["output_throughput"], r["ttft_ms"]["p50"], r["ttft_ms"]["p99"],
                      r["tpot_ms"]["p50"], r["tpot_ms"]["p99"], r["itl_ms"]["p50"], r["goodput_rps"],
                      r["slo_attainment"], r["spec_decode"]["acceptance_rate"], learned, top])
    note = (f"SLO: TTFT {args.slo_ttft_s * 1e3:g} ms, TPOT {args.slo_tpot_s * 1e3:g} ms; {args.duration_s:g} s of arrivals per "
            f"workload; outputs capped at {args.max_tokens} tokens (ignore_eos); max_num_seqs {args.max_num_seqs}. "
            "'learned %' is the share of steps the learned policy decided (the rest fell back).")
    return "\n\n".join([markdown_table(headers, table), note])


def summarize_rows(rows: list[dict]) -> dict:
    """`fallback_share`: fallback decisions / all decisions of the learned router's runs;
    `learned_x_cost_model_goodput`: the geometric mean over workloads of learned / cost-model
    goodput (requests/s within SLO), with each workload's ratio beside it."""
    summary: dict = {}
    learned = [r for r in rows if r["router"] == "learned"]
    decided = sum(sum(r["routing"]["by_source"].values()) for r in learned)
    if decided:
        summary["fallback_share"] = sum(r["routing"]["by_source"].get("fallback", 0) for r in learned) / decided
    goodput = {(r["workload"], r["router"]): r["report"]["goodput_rps"] for r in rows}
    ratios = {w: goodput[(w, "learned")] / goodput[(w, "cost-model")] for w, router in goodput
              if router == "learned" and goodput.get((w, "cost-model"))}
    if ratios:
        summary["learned_x_cost_model_goodput"] = math.prod(max(x, 1e-9) for x in ratios.values()) ** (1 / len(ratios))
        summary["learned_x_cost_model_goodput_by_workload"] = ratios
    return summary


def main(args: BenchServingArgs) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    start = time.monotonic()
    deadline = start + 60 * args.max_minutes
    static, speeds = (args.static, {}) if args.static != "auto" or "static" not in args.router_list \
        else calibrate_static(args)
    rows = run_all(args, static, deadline)
    data = {"summary": summarize_rows(rows), "args": asdict(args), "static": static, "static_calibration_tok_s": speeds, "rows": rows,
            "machine": machine_info(), "wall_s": time.monotonic() - start}
    markdown = render_markdown(args, rows, static)
    json_path, _ = publish_results(args.output_name, data, markdown)
    plot_results(data, json_path)
    return data


if __name__ == "__main__":
    from cli.missing_data import exit_on_missing_data
    with exit_on_missing_data():
        main(parse_dataclass(BenchServingArgs, description=__doc__.split("\n")[0]))
