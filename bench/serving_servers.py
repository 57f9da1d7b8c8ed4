"""The servers of a serving benchmark: one `python -m serving` per configuration, all up at once.

A router server (learned, cost model) loads every level; a fixed one loads only what its chain
runs (plain: the target; `ngram>target@k4`: the target; `int4>target@k2`: the int4 copy too;
`draft>target@k4`: the trained draft), so that ~30 of them fit in memory. Before each start the
machine's available memory is checked against the largest server of its kind so far (router or
fixed; before any, the largest of the other kind) plus a reserve; a server that would not fit is
skipped with its reason rather than pushing the machine into swap.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from engine.decision import Decision
from engine.linear_kernels import QUANTIZED_FORMATS
from serving.server_process import ServerProcess

ROUTER_FLAGS = {"learned": "learned", "cost-model": "cost-model"}
FIRST_SERVER_GB = 1.5            # what a server is assumed to take before one has been measured
logger = logging.getLogger("bench")


@dataclass(frozen=True)
class ServedConfig:
    """One configuration: `name` is learned, cost-model, plain or a static label such as ngram>target@k4."""

    name: str

    @property
    def is_router(self) -> bool:
        return self.name in ROUTER_FLAGS

    def router_flag(self) -> str:
        return ROUTER_FLAGS.get(self.name, self.name)

    def level_flags(self, draft: str, eagle: str, quantized_levels: str) -> list[str]:
        """The levels to load: all for a router, else those the chain runs ('' turns one off)."""
        if self.is_router:
            return ["--draft", draft, "--eagle", eagle, "--quantized-levels", quantized_levels]
        chain = Decision.parse(self.name).chain
        return ["--draft", draft if "draft" in chain else "", "--eagle", eagle if "eagle" in chain else "",
                "--quantized-levels", ",".join(level for level in chain if level in QUANTIZED_FORMATS)]


def mem_available_gb() -> float:
    return psutil.virtual_memory().available / 2 ** 30


def rss_gb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2 ** 30


class ServerFleet:
    """Starts servers one at a time (loading several at once thrashes 2 cores) and stops them all.

    Args:
        common_flags: the flags every server gets (model, batch, threads, SLOs, precision).
        log_dir: each server's log (and the routers' decision logs) go here.
        min_free_gb: memory left free beyond the largest server of the same kind seen so far.
    """

    def __init__(self, common_flags: list[str], log_dir: Path, prefix: str, min_free_gb: float,
                 ready_timeout_s: float = 900.0):
        self.common_flags = list(common_flags)
        self.log_dir, self.prefix = Path(log_dir), prefix
        self.min_free_gb = min_free_gb
        self.ready_timeout_s = ready_timeout_s
        self.servers: dict[str, ServerProcess] = {}
        self.rss_gb: dict[str, float] = {}
        self.start_s: dict[str, float] = {}
        self.skipped: dict[str, str] = {}

    def start(self, config: ServedConfig, level_flags: list[str]) -> ServerProcess | None:
        """Start `config`'s server and send it one warm-up request, or record why not (too little
        memory, a failed start or warm-up) and return None."""
        similar = [gb for name, gb in self.rss_gb.items() if ServedConfig(name).is_router == config.is_router]
        needed = max(similar or self.rss_gb.values(), default=FIRST_SERVER_GB) + self.min_free_gb
        available = mem_available_gb()
        if available < needed:
            return self._skip(config, f"MemAvailable {available:.1f} GiB < {needed:.1f} GiB (largest such server + reserve)")
        slug = config.name.replace(">", "-").replace("@", "-")
        decision_log = str(self.log_dir / f"{self.prefix}-{slug}-decisions.jsonl") if config.is_router else ""
        flags = [*self.common_flags, "--router", config.router_flag(), *level_flags, "--decision-log", decision_log]
        server = ServerProcess(flags, self.log_dir / f"{self.prefix}-{slug}.log", ready_timeout_s=self.ready_timeout_s)
        began = time.monotonic()
        try:
            server.start()
        except RuntimeError as exc:
            return self._skip(config, f"start failed: {str(exc).splitlines()[0]}")
        try:
            warm_up(server.url)
        except httpx.HTTPError as exc:
            server.stop(timeout_s=10)
            return self._skip(config, f"warm-up request failed: {exc!r}")
        self.servers[config.name] = server
        self.start_s[config.name] = time.monotonic() - began
        self.rss_gb[config.name] = rss_gb(server.pid)
        logger.info("started %-24s in %5.1f s, RSS %.2f GiB, MemAvailable %.1f GiB", config.name,
                    self.start_s[config.name], self.rss_gb[config.name], mem_available_gb())
        return server

    def _skip(self, config: ServedConfig, reason: str) -> None:
        logger.warning("skipping %s: %s", config.name, reason)
        self.skipped[config.name] = reason
        return None

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop()


def router_status(url: str) -> dict:
    return httpx.get(f"{url}/ready", timeout=10).json()["router"]


def warm_up(url: str) -> None:
    """One short request, so a run does not pay the first request's one-off costs."""
    model = httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]
    httpx.post(f"{url}/v1/completions", json={"model": model, "prompt": "def add(a, b):", "max_tokens": 4,
                                              "temperature": 0}, timeout=300).raise_for_status()


def scrape_router_metrics(url: str) -> dict:
    """From /metrics: decisions by source and the decision-time histogram `[(le, cumulative count)]`."""
    by_source: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "specroute:router_decisions_total":
                source = sample.labels["source"]
                by_source[source] = by_source.get(source, 0.0) + sample.value
            elif sample.name == "specroute:router_decision_seconds_bucket":
                upper = float(sample.labels["le"])
                buckets[upper] = buckets.get(upper, 0.0) + sample.value
    return {"by_source": by_source, "decision_buckets": sorted(buckets.items())}


def metrics_delta(after: dict, before: dict) -> dict:
    """What happened between two scrapes (counters and histogram buckets only grow)."""
    old = dict(before["decision_buckets"])
    return {"by_source": {k: v - before["by_source"].get(k, 0.0) for k, v in after["by_source"].items()
                          if v - before["by_source"].get(k, 0.0) > 0},
            "decision_buckets": [(le, count - old.get(le, 0.0)) for le, count in after["decision_buckets"]]}
