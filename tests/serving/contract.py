"""The OpenAPI document as a contract, checked by schemathesis against a live server.

`run_contract(url, ...)` loads the server's own `/openapi.json` and, for every operation,
sends `max_examples` schema-valid requests (positive data: each must be accepted) and, for
operations with a body, `max_examples` schema-breaking ones (negative data: each must be
refused with a 4xx), seeded. Every response is also held to the document: no 5xx, a
declared status and content type, a body (each SSE event) that matches its schema, declared
headers. Failures are counted per check, not raised, so a benchmark can report them.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi import checks as openapi_checks

CHECKS = [not_a_server_error, openapi_checks.status_code_conformance, openapi_checks.content_type_conformance,
          openapi_checks.response_schema_conformance, openapi_checks.response_headers_conformance,
          openapi_checks.positive_data_acceptance, openapi_checks.negative_data_rejection]
# schemathesis' failure classes -> the check that raises them
POSITIVE_ACCEPTANCE, NEGATIVE_REJECTION = "RejectedPositiveData", "AcceptedNegativeData"


@dataclass
class ContractReport:
    """What the run found: cases sent by mode, failures by schemathesis failure class."""

    cases: collections.Counter = field(default_factory=collections.Counter)
    failures: collections.Counter = field(default_factory=collections.Counter)
    responses_5xx: int = 0
    examples: list[str] = field(default_factory=list)
    forward_path: str = ""          # the server's, where the caller knows it

    @property
    def num_cases(self) -> int:
        return sum(self.cases.values())

    @property
    def positive_acceptance_failures(self) -> int:
        return self.failures[POSITIVE_ACCEPTANCE]

    @property
    def num_failures(self) -> int:
        return sum(self.failures.values())

    def observe(self, mode: GenerationMode, case, status: int, error: BaseException | None, body: str) -> None:
        self.cases[mode.value] += 1
        self.responses_5xx += status >= 500
        failures = getattr(error, "exceptions", None) or ([error] if error is not None else [])
        for failure in failures:
            self.failures[type(failure).__name__] += 1
            if len(self.examples) < 20:
                self.examples.append(f"{mode.value} {case.operation.label} {str(case.body)[:300]}: "
                                     f"{type(failure).__name__}, got {status} {body[:200]}")


def run_contract(url: str, max_examples: int, seed_value: int = 0, timeout_s: float = 120.0) -> ContractReport:
    """Positive and negative cases for every operation of the document served at `url`."""
    document = httpx.get(f"{url}/openapi.json", timeout=30).json()
    report = ContractReport()
    for result in schemathesis.openapi.from_dict(document).get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _run_mode(result.ok(), mode, url, report, max_examples, seed_value, timeout_s)
            except Unsatisfiable:           # no negative data for an operation without parameters
                pass
    return report


def _run_mode(operation, mode: GenerationMode, url: str, report: ContractReport, max_examples: int,
              seed_value: int, timeout_s: float) -> None:
    @seed(seed_value)
    @settings(max_examples=max_examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def send(case):
        response = case.call(base_url=url, timeout=timeout_s)
        try:
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, BaseExceptionGroup) as exc:
            report.observe(mode, case, response.status_code, exc, response.text)
        else:
            report.observe(mode, case, response.status_code, None, "")

    send()
