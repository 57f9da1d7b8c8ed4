"""Server settings (`python -m serving --help`), checked on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine.config import engine_field, num_threads_field, parse_quantized_levels
from engine.precision import PrecisionArgs

ROUTER_NAMES = ("learned", "cost-model")     # beside `plain` and fixed chains such as ngram>target@4


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass
class ServerConfig(PrecisionArgs):
    """Settings of the OpenAI-compatible server; every field is a `--flag` of `python -m serving`."""

    model: str = field(default="default", metadata=_help(
        "'default' (the embedded SmolLM2-135M-Instruct), a local HF directory or a .gguf file"))
    policy: str = field(default="checkpoints/router", metadata=_help(
        "learned router checkpoint directory (manifest.json + policy.safetensors); "
        "missing or unusable -> the cost-model fallback"))
    router: str = field(default="learned", metadata=_help(
        "learned (the policy, guarded, cost model as fallback) | cost-model (cost_model is accepted) | plain "
        "| a fixed chain@K such as ngram>target@4 (baselines, A/B runs)"))
    draft: str = field(default="checkpoints/draft", metadata=_help(
        "trained draft directory (used when it exists; '' disables it)"))
    eagle: str = field(default="checkpoints/eagle", metadata=_help(
        "EAGLE head directory (python -m distill.eagle; used when it exists and was made for "
        "the model; '' disables it)"))
    quantized_levels: str = engine_field("quantized_levels")
    speculative_config: str = field(default="", metadata=_help(
        "vLLM-style JSON for the flags above, e.g. '{\"method\": \"ngram\", \"num_speculative_tokens\": 4}' "
        "(keys: method, model, num_speculative_tokens, router, quantized_levels; see serving/speculative_config.py)"))
    profile: str = field(default="", metadata=_help(
        "latency profile JSON for the cost-model fallback; levels it lacks are measured at start-up "
        "(default: this machine's curve, see --calibration-budget-s)"))
    online_correction: bool = field(default=True, metadata=_help(
        "correct the cost model's step times and tokens with what the steps it chose took "
        "(per batch bucket; 5% exploration); --no-online-correction scores with the profile alone"))
    profile_budget_s: float = field(default=30.0, metadata=_help(
        "seconds the start-up may spend measuring levels the profile lacks"))
    calibration_budget_s: float = field(default=60.0, metadata=_help(
        "seconds the first start on this machine (and path, model, levels) may spend measuring the latency "
        "curve of every loaded level; cached under $SPECROUTE_CACHE/latency_curve. 0: no calibration, "
        "the shipped profiles/<model>.<path>.json (measured on another machine)"))
    host: str = field(default="127.0.0.1", metadata=_help("address to bind"))
    port: int = field(default=8000, metadata=_help("port to bind"))
    served_model_name: str = field(default="", metadata=_help(
        "model id clients send and /v1/models lists (default: the model's name)"))
    max_num_seqs: int = engine_field("max_num_seqs")
    max_queue: int = field(default=32, metadata=_help(
        "most requests waiting for a batch slot; beyond it requests get 429 with Retry-After"))
    max_model_len: int = engine_field("max_model_len")
    default_max_tokens: int = field(default=256, metadata=_help(
        "max_tokens when a request gives none (capped by the room left in the context)"))
    max_body_bytes: int = field(default=1 << 20, metadata=_help("largest request body; larger -> 413"))
    header_timeout_s: float = field(default=5.0, metadata=_help(
        "seconds a connection may take to send a request's headers; slower -> 408, connection closed"))
    body_timeout_s: float = field(default=10.0, metadata=_help(
        "seconds a request may take to send its body once its headers are in; slower -> 408"))
    max_connections: int = field(default=256, metadata=_help(
        "most open connections; one more gets 503 and is closed"))
    allowed_hosts: str = field(default="", metadata=_help(
        "comma-separated Host names the server answers (e.g. 'api.example.com,*.internal'); '' or '*': any. "
        "Set it when binding beyond loopback"))
    api_key: str = field(default="", repr=False, metadata=_help(
        "require 'Authorization: Bearer <key>' on every route but /health, /ready and /metrics "
        "(default: $SPECROUTE_API_KEY; '' and unset: no key)"))
    api_key_metrics: bool = field(default=False, metadata=_help("with --api-key, require the key on /metrics too"))
    docs: bool = field(default=False, metadata=_help(
        "serve /docs and /redoc (their scripts load from a public CDN, so off by default; "
        "/openapi.json is always served)"))
    slo_tpot_s: float = field(default=0.25, metadata=_help(
        "time-per-output-token SLO (seconds), seen by the router", aliases={"--slo-tpot-ms": 1e-3}))
    slo_ttft_s: float = field(default=5.0, metadata=_help(
        "time-to-first-token SLO (seconds), seen by the router", aliases={"--slo-ttft-ms": 1e-3}))
    max_decision_ms: float = field(default=5.0, metadata=_help(
        "a learned decision slower than this is replaced by the fallback's"))
    decision_log: str = field(default="logs/decisions.jsonl", metadata=_help(
        "JSONL file of routing decisions (obs, action, propensity, reward, next obs, policy version) "
        "for `python -m agents.ope` ('' disables it)"))
    decision_log_max_mb: float = field(default=64.0, metadata=_help(
        "size (MB) at which the decision log is rotated to <file>.1 (3 rotated files are kept)"))
    generation_config: str = field(default="auto", metadata=_help(
        "sampling defaults for fields a request omits: 'auto' (the model directory's generation_config.json, "
        "else the built-in default for the embedded model: temperature 0.2, top_p 0.9), 'openai' (1.0 / 1.0), "
        "or a path to a generation_config.json"))
    per_request_spec_metrics: str = field(default="none", metadata=_help(
        "speculation metrics in each choice's `spec_decode`: none | summary (acceptance length and rate, chain, K) "
        "| detailed (also the accepted-length histogram and acceptance by draft position)",
        choices=["none", "summary", "detailed"]))
    drain_timeout_s: float = field(default=60.0, metadata=_help(
        "on SIGTERM, how long in-flight requests may run before they are cut off (/ready says 'draining' meanwhile)"))
    num_threads: int = num_threads_field()
    tokenizer_threads: int = field(default=1, metadata=_help(
        "threads that tokenise and template requests off the event loop (a bounded pool)"))
    log_level: str = field(default="info", metadata=_help(
        "log level", choices=["critical", "error", "warning", "info", "debug"]))

    def __post_init__(self) -> None:
        if self.router == "cost_model":
            self.router = "cost-model"      # the agents' spelling is the one name; the old one is accepted
        if self.speculative_config:
            from serving.speculative_config import apply_speculative_config
            apply_speculative_config(self)
        parse_quantized_levels(self.quantized_levels)
        for name in ("max_num_seqs", "max_model_len", "default_max_tokens", "max_body_bytes", "tokenizer_threads",
                     "max_connections"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        for name in ("slo_tpot_s", "slo_ttft_s", "max_decision_ms", "drain_timeout_s", "profile_budget_s",
                     "decision_log_max_mb", "header_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if not math.isfinite(self.calibration_budget_s) or self.calibration_budget_s < 0:
            raise ValueError(f"calibration_budget_s must be a finite number >= 0, got {self.calibration_budget_s}")
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {self.num_threads}")
        if self.per_request_spec_metrics not in ("none", "summary", "detailed"):
            raise ValueError(f"per_request_spec_metrics must be none, summary or detailed, "
                             f"got {self.per_request_spec_metrics!r}")
        if not self.model:
            raise ValueError("model must be 'default' or a path")
        if self.router not in ROUTER_NAMES:
            from engine.decision import Decision
            Decision.parse(self.router)     # raises ValueError naming the expected form

    @property
    def max_in_flight(self) -> int:
        """Requests the server holds at once: a full batch plus a full queue."""
        return self.max_num_seqs + self.max_queue
