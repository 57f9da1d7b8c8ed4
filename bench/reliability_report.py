"""The `summary` of `bench.reliability` and its targets (issue 30): one figure per check, and
whether it met the target."""

from __future__ import annotations

from cli.results import machine_info, markdown_table
from tests.serving.contract import ContractReport


def summarize(tally, contract: ContractReport, wrong_status: int, overload: list[dict], retrying: dict,
              big: dict, slow: dict, disconnects: dict, drain: dict, greedy_identical: bool, path: str) -> dict:
    conformance = contract.num_failures - contract.positive_acceptance_failures - contract.failures["AcceptedNegativeData"]
    ratios = [retrying["retry_after_over_wait"]] + [r["ratio"] for r in overload]
    return {"cases": tally.cases + contract.num_cases, "responses_5xx": tally.responses_5xx + contract.responses_5xx,
            "schema_violations": tally.schema_violations + conformance,
            "positive_acceptance_failures": contract.positive_acceptance_failures,
            "negative_rejection_failures": contract.failures["AcceptedNegativeData"],
            "ignored_fields_accepted": tally.ignored_fields_accepted,
            "retry_after_over_wait": retrying["retry_after_over_wait"],
            "retry_after_over_wait_min": min((r for r in ratios if r is not None), default=None),
            "retry_after_over_wait_probes": [r["ratio"] for r in overload],
            "retrying_clients_gave_up": retrying["gave_up"],
            "health_p99_ms_under_big_prompts": big["health_p99_ms_under_big_prompts"],
            "health_p99_ms_idle": big["health_p99_ms_idle"],
            "slow_reads_closed": slow["closed_within_timeout"], "slow_reads": slow["connections"],
            "lost_requests": tally.lost_requests + retrying["other_status"],
            "kv_slots_leaked": disconnects["kv_slots_leaked"], "drain_ok": drain["drain_ok"],
            "bad_inputs_wrong_status": wrong_status, "greedy_identical": greedy_identical,
            "cpu": machine_info()["cpu"], "forward_path": path}


def targets_met(summary: dict) -> dict[str, bool]:
    ratios = [summary["retry_after_over_wait"], *summary["retry_after_over_wait_probes"]]
    return {"responses_5xx": summary["responses_5xx"] == 0 and summary["cases"] >= 1500,
            "positive_acceptance_failures": summary["positive_acceptance_failures"] == 0,
            "negative_rejection_failures": summary["negative_rejection_failures"] == 0,
            "schema_violations": summary["schema_violations"] == 0,
            "ignored_fields_accepted": summary["ignored_fields_accepted"] == 0,
            "retry_after_over_wait": all(r is not None and 0.5 <= r <= 2 for r in ratios),
            "retrying_clients_gave_up": summary["retrying_clients_gave_up"] == 0,
            "health_p99_ms_under_big_prompts": summary["health_p99_ms_under_big_prompts"] < 50,
            "slow_reads_closed": summary["slow_reads_closed"] == summary["slow_reads"],
            "lost_requests": summary["lost_requests"] == 0, "kv_slots_leaked": summary["kv_slots_leaked"] == 0,
            "drain_ok": summary["drain_ok"]}


def targets_table(summary: dict, targets: dict[str, bool]) -> str:
    rows = [[name, summary[name], "pass" if ok else "FAIL"] for name, ok in targets.items()]
    return markdown_table(["check", "value", "target met"], rows)
