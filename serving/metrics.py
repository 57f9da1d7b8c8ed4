"""Prometheus metrics: vLLM's names for requests and speculative decoding, plus routing.

Counters, gauges and histograms live in a registry of their own (one per app), so several
servers in one process (tests) do not collide. The engine thread calls `observe_step`; the
HTTP handlers call `observe_request`; `/metrics` sets the occupancy gauges from the engine
loop's published `EngineSnapshot` (never from the live engine) and renders `render()`.

vLLM names kept as-is (prometheus_client adds `_total` to counters, as vLLM's exposition does):
`vllm:spec_decode_num_drafts`, `vllm:spec_decode_num_draft_tokens`,
`vllm:spec_decode_num_accepted_tokens`, `vllm:spec_decode_num_accepted_tokens_per_pos`,
`vllm:num_requests_running`, `vllm:num_requests_waiting`, `vllm:prompt_tokens`,
`vllm:generation_tokens`, `vllm:request_success`, `vllm:time_to_first_token_seconds`,
`vllm:inter_token_latency_seconds`, `vllm:e2e_request_latency_seconds`, `vllm:kv_cache_usage_perc`
(0..1: tokens the target's KV cache holds over the batch's token budget, `max_num_tokens`).
Routing: `specroute:router_decisions{source, chain, k}`, `specroute:router_fallbacks{cause}`,
`specroute:router_decision_seconds`, per-pair `specroute:pair_*_tokens{drafter, verifier}`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, disable_created_metrics, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from engine import Engine, RequestOutput
from serving.engine_loop import EngineSnapshot

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
_E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServingMetrics:
    def __init__(self, model_name: str):
        disable_created_metrics()       # vLLM's exposition has no *_created series either
        self.registry = CollectorRegistry()
        self.model_name = model_name
        labels = ["model_name"]
        r = self.registry
        self.num_drafts = Counter("vllm:spec_decode_num_drafts", "Speculative steps that drafted tokens.", labels, registry=r)
        self.num_draft_tokens = Counter("vllm:spec_decode_num_draft_tokens", "Tokens proposed by the first level of a chain.", labels, registry=r)
        self.num_accepted_tokens = Counter("vllm:spec_decode_num_accepted_tokens", "Proposed tokens the target accepted.", labels, registry=r)
        self.accepted_per_pos = Counter("vllm:spec_decode_num_accepted_tokens_per_pos", "Accepted tokens by draft position.", labels + ["position"], registry=r)
        self.running = Gauge("vllm:num_requests_running", "Requests in the running batch.", labels, registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests waiting for a batch slot.", labels, registry=r)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens of finished requests.", labels, registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens", "Generated tokens.", labels, registry=r)
        self.request_success = Counter("vllm:request_success", "Requests that ended, by finish reason.", labels + ["finished_reason"], registry=r)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token.", labels, buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Time between streamed token deliveries (per token).", labels, buckets=_LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "Request latency from arrival to last token.", labels, buckets=_E2E_BUCKETS, registry=r)
        self.step_latency = Histogram("specroute:engine_step_seconds", "Engine step latency.", labels, buckets=_LATENCY_BUCKETS, registry=r)
        self.step_batch = Gauge("specroute:engine_step_batch_size", "Rows in the last engine step.", labels, registry=r)
        self.kv_usage = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage: 1 means full (target level's tokens / max_num_tokens).", labels, registry=r)
        self.kv_free_slots = Gauge("specroute:kv_cache_free_slots", "Free KV slots per model level.", labels + ["level"], registry=r)
        self.kv_bytes = Gauge("specroute:kv_cache_bytes", "Bytes held by each level's KV cache.", labels + ["level"], registry=r)
        self.decisions = Counter("specroute:router_decisions", "Routing decisions by source and choice (per step).", labels + ["source", "chain", "k"], registry=r)
        self.fallbacks = Counter("specroute:router_fallbacks", "Steps decided by the fallback, by cause.", labels + ["cause"], registry=r)
        self.decision_time = Histogram("specroute:router_decision_seconds", "Time to take a routing decision.", labels, buckets=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1), registry=r)
        self.pair_proposed = Counter("specroute:pair_proposed_tokens", "Tokens a level proposed to the level above it.", labels + ["drafter", "verifier"], registry=r)
        self.pair_accepted = Counter("specroute:pair_accepted_tokens", "Tokens the level above accepted.", labels + ["drafter", "verifier"], registry=r)
        self.rejected = Counter("specroute:requests_rejected", "Requests refused before they reached the engine.", labels + ["reason"], registry=r)
        self.failed_steps = Counter("specroute:engine_failed_steps", "Engine steps that raised (the loop went on).", labels, registry=r)

    # ---- engine thread --------------------------------------------------------------------
    def observe_step(self, engine: Engine, outputs: list[RequestOutput]) -> None:
        """Speculation counters from the step just taken, and the engine's occupancy."""
        m = self.model_name
        record = engine.last_step
        for result in record.results:
            if result.num_proposed:
                self.num_drafts.labels(m).inc()
                self.num_draft_tokens.labels(m).inc(result.num_proposed)
                self.num_accepted_tokens.labels(m).inc(result.num_accepted)
                for position in range(result.num_accepted):
                    self.accepted_per_pos.labels(m, str(position)).inc()
            for pair in result.pairs:
                self.pair_proposed.labels(m, pair.drafter, pair.verifier).inc(pair.num_proposed)
                self.pair_accepted.labels(m, pair.drafter, pair.verifier).inc(pair.num_accepted)
        self.generation_tokens.labels(m).inc(sum(len(o.new_token_ids) for o in outputs))
        self.step_latency.labels(m).observe(record.latency_s)
        self.step_batch.labels(m).set(record.batch_size)

    def observe_failed_step(self) -> None:
        self.failed_steps.labels(self.model_name).inc()

    def observe_occupancy(self, snapshot: EngineSnapshot) -> None:
        """Occupancy gauges from the snapshot the engine thread published last (`EngineLoop.snapshot`)."""
        m = self.model_name
        self.running.labels(m).set(snapshot.num_running)
        self.waiting.labels(m).set(snapshot.num_waiting)
        self.kv_usage.labels(m).set(snapshot.kv_usage)
        for name, free in snapshot.kv_free_slots:
            self.kv_free_slots.labels(m, name).set(free)
        for name, nbytes in snapshot.kv_bytes:
            self.kv_bytes.labels(m, name).set(nbytes)

    def observe_decision(self, source: str, label: str, k: int, seconds: float, count: int = 1) -> None:
        m = self.model_name
        self.decisions.labels(m, source, label, str(k)).inc(count)
        self.decision_time.labels(m).observe(seconds)

    def observe_fallback(self, cause: str) -> None:
        self.fallbacks.labels(self.model_name, cause).inc()

    # ---- HTTP side ------------------------------------------------------------------------
    def observe_request(self, finished_reason: str, num_prompt_tokens: int, ttft_s: float | None,
                        e2e_s: float, itl_s: list[float]) -> None:
        m = self.model_name
        self.request_success.labels(m, finished_reason).inc()
        self.prompt_tokens.labels(m).inc(num_prompt_tokens)
        if ttft_s is not None:
            self.ttft.labels(m).observe(ttft_s)
        self.e2e.labels(m).observe(e2e_s)
        for gap in itl_s:
            self.itl.labels(m).observe(gap)

    def observe_rejection(self, reason: str) -> None:
        self.rejected.labels(self.model_name, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
