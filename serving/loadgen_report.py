"""The load generator's report: latency percentiles, throughput, goodput and SLO attainment.

Definitions follow `vllm bench serve`: TTFT is arrival to first streamed text; TPOT is
(E2E - TTFT) / (output tokens - 1) per request; ITL is the gap between streamed chunks (several
tokens arrive at once when a speculative step accepts them); goodput counts requests per second
that met both the TTFT and the TPOT SLO; SLO attainment is that count over every request sent
(refused and failed ones count as misses). The target's URL and model name are recorded with the
numbers; the speculative-decoding counters are SpecRoute's own and read None (n/a) for servers
that do not report them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from serving.loadgen import LoadgenConfig
    from serving.openai_target import RequestResult


def _stats_ms(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "p50": None, "p99": None}
    array = np.asarray(values) * 1e3
    return {"mean": float(array.mean()), "p50": float(np.percentile(array, 50)), "p99": float(np.percentile(array, 99))}


def _spec_decode(ok: list[RequestResult]) -> dict:
    """Draft and accepted token totals over the requests whose server reported them, else None."""
    reported = [r for r in ok if r.num_draft_tokens is not None]
    if not reported:
        return {"num_draft_tokens": None, "num_accepted_tokens": None, "acceptance_rate": None}
    drafted = sum(r.num_draft_tokens for r in reported)
    accepted = sum(r.num_accepted_tokens or 0 for r in reported)
    return {"num_draft_tokens": drafted, "num_accepted_tokens": accepted,
            "acceptance_rate": accepted / drafted if drafted else None}


def summarize(cfg: LoadgenConfig, results: list[RequestResult], duration_s: float, model: str = "") -> dict:
    """The report of one run against `cfg.base_url`; `model` is the name the requests carried."""
    ok = [r for r in results if r.ok]
    good = [r for r in ok if r.ttft_s is not None and r.ttft_s <= cfg.slo_ttft_s
            and (r.tpot_s is None or r.tpot_s <= cfg.slo_tpot_s)]
    return {
        "base_url": cfg.base_url, "model": model or cfg.model,
        "num_requests": len(results), "completed": len(ok),
        "rejected_429": sum(r.status == 429 for r in results),
        "failed": sum(not r.ok and r.status != 429 for r in results),
        "duration_s": duration_s,
        "request_throughput": len(ok) / duration_s if duration_s else 0.0,
        "output_throughput": sum(r.num_output_tokens for r in ok) / duration_s if duration_s else 0.0,
        "total_input_tokens": sum(r.num_prompt_tokens for r in ok),
        "total_output_tokens": sum(r.num_output_tokens for r in ok),
        "ttft_ms": _stats_ms([r.ttft_s for r in ok if r.ttft_s is not None]),
        "tpot_ms": _stats_ms([r.tpot_s for r in ok if r.tpot_s is not None]),
        "itl_ms": _stats_ms([gap for r in ok for gap in r.itl_s]),
        "e2el_ms": _stats_ms([r.e2e_s for r in ok]),
        "goodput_rps": len(good) / duration_s if duration_s else 0.0,
        "slo_attainment": len(good) / len(results) if results else 0.0,
        "slo": {"ttft_ms": cfg.slo_ttft_s * 1e3, "tpot_ms": cfg.slo_tpot_s * 1e3},
        "spec_decode": _spec_decode(ok),
        "errors": sorted({r.error for r in results if r.error})[:5],
    }


def format_table(report: dict) -> str:
    """The report as `vllm bench serve` prints it."""
    def fmt(value, digits=2):
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = ["{s:=^60}".format(s=" Serving Benchmark Result "),
             f"{'Target:':<20}{report.get('base_url', ''):>40}",
             f"{'Model:':<20}{report.get('model') or 'n/a':>40}",
             f"{'Successful requests:':<40}{report['completed']:>20}",
             f"{'Rejected (429) / failed:':<40}{report['rejected_429']:>10}{report['failed']:>10}",
             f"{'Benchmark duration (s):':<40}{report['duration_s']:>20.2f}",
             f"{'Total input tokens:':<40}{report['total_input_tokens']:>20}",
             f"{'Total generated tokens:':<40}{report['total_output_tokens']:>20}",
             f"{'Request throughput (req/s):':<40}{report['request_throughput']:>20.3f}",
             f"{'Output token throughput (tok/s):':<40}{report['output_throughput']:>20.2f}",
             f"{'Goodput (req/s):':<40}{report['goodput_rps']:>20.3f}",
             f"{'SLO attainment:':<40}{report['slo_attainment']:>20.3f}",
             f"{'Draft acceptance rate:':<40}{fmt(report['spec_decode']['acceptance_rate'], 3):>20}"]
    for key, title in (("ttft_ms", "Time to First Token"), ("tpot_ms", "Time per Output Token (excl. 1st token)"),
                       ("itl_ms", "Inter-token Latency"), ("e2el_ms", "End-to-end Latency")):
        stats = report[key]
        lines.append("{s:-^60}".format(s=f" {title} "))
        label = key.split("_")[0].upper()
        lines += [f"{f'Mean {label} (ms):':<40}{fmt(stats['mean']):>20}",
                  f"{f'Median {label} (ms):':<40}{fmt(stats['p50']):>20}",
                  f"{f'P99 {label} (ms):':<40}{fmt(stats['p99']):>20}"]
    lines.append("=" * 60)
    return "\n".join(lines)
