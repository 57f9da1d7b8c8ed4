"""The FastAPI app: OpenAI routes, health, readiness and metrics around one engine loop."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from engine import TARGET, Engine
from serving.auth import ApiKeyAuth, open_paths
from serving.config import ServerConfig
from serving.engine_loop import EngineLoop
from serving.errors import BodySizeLimit, error_response, install_error_handlers
from serving.generation import generate, prepare_prompts
from serving.http_guard import HttpGuard, parse_allowed_hosts
from serving.metrics import CONTENT_TYPE, ServingMetrics
from serving.openapi import install_openapi
from serving.protocol import ChatCompletionRequest, CompletionRequest, RequestError
from serving.request_id import RequestIdMiddleware
from serving.retry_after import RetryPromises
from serving.sampling_defaults import OPENAI_DEFAULTS, SamplingDefaults
from serving.spec_metrics import PerRequestSpecMetrics
from serving.tokenize_routes import install_tokenize_routes, package_version


@dataclass
class ServingState:
    """Everything the routes share. The engine itself is touched only by `engine_loop`'s thread
    (the handlers use its tokenizer and `encode_prompt`, which read nothing that a step changes)."""

    engine: Engine
    engine_loop: EngineLoop
    config: ServerConfig
    model_name: str
    metrics: ServingMetrics
    router: object | None = None
    sampling_defaults: SamplingDefaults = OPENAI_DEFAULTS
    spec_metrics: PerRequestSpecMetrics | None = None      # None: --per-request-spec-metrics none
    retry_promises: RetryPromises = field(default_factory=lambda: RetryPromises(None))    # Retry-After of 429s
    is_draining: bool = False
    started_at: float = field(default_factory=time.time)
    tokenizer_pool: ThreadPoolExecutor | None = None     # see `prepare_pool`

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def vocab_size(self) -> int:
        return self.engine.levels[TARGET].runner.vocab_size

    def prepare_pool(self) -> ThreadPoolExecutor:
        """The bounded pool that tokenises and templates requests, so a 1 MB prompt never holds
        the event loop (the tokenizer releases the GIL while it works)."""
        if self.tokenizer_pool is None:
            self.tokenizer_pool = ThreadPoolExecutor(self.config.tokenizer_threads, thread_name_prefix="tokenize")
        return self.tokenizer_pool

    def router_status(self) -> dict:
        status = getattr(self.router, "status", None)
        return status() if callable(status) else {"source": "static"}


def _check_model(state: ServingState, model: str | None) -> None:
    if model is not None and model != state.model_name:
        raise RequestError(f"The model `{model}` does not exist. Available: {state.model_name}",   # printable()d
                           param="model", status_code=404, code="model_not_found")


def create_app(state: ServingState) -> FastAPI:
    """The app; its lifespan starts the engine loop and, at shutdown, stops it (after uvicorn
    has drained in-flight requests)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state.engine_loop.start()
        try:
            yield
        finally:
            state.is_draining = True
            state.engine_loop.stop(timeout_s=state.config.drain_timeout_s)
            if state.tokenizer_pool is not None:
                state.tokenizer_pool.shutdown(wait=False, cancel_futures=True)
                state.tokenizer_pool = None
            close = getattr(state.router, "close", None)
            if callable(close):
                close()

    docs = state.config.docs
    app = FastAPI(title="SpecRoute", version=package_version(), lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  description="OpenAI-compatible server with multi-level speculative decoding and a learned router.")
    app.state.serving = state
    install_error_handlers(app)
    install_openapi(app, state.vocab_size, open_paths(state.config.api_key_metrics) if state.config.api_key else None)
    app.add_middleware(BodySizeLimit, max_bytes=state.config.max_body_bytes, read_timeout_s=state.config.body_timeout_s)
    app.add_middleware(ApiKeyAuth, api_key=state.config.api_key, protect_metrics=state.config.api_key_metrics)
    app.add_middleware(HttpGuard, allowed_hosts=parse_allowed_hosts(state.config.allowed_hosts))
    app.add_middleware(RequestIdMiddleware)     # outermost: every response carries X-Request-Id
    install_tokenize_routes(app, state, _check_model)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        _check_model(state, body.model)
        body.check_supported()
        prompts = await prepare_prompts(state, body.prompts(), body)
        return await generate(state, request, body, prompts, "completion")

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        _check_model(state, body.model)
        body.check_supported()
        prompts = await prepare_prompts(state, [body.template_messages()], body)
        return await generate(state, request, body, prompts, "chat")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{
            "id": state.model_name, "object": "model", "created": int(state.started_at), "owned_by": "specroute",
            "max_model_len": state.config.max_model_len, "sampling_defaults": state.sampling_defaults.to_json()}]}

    @app.get("/health")
    async def health():
        if not state.engine_loop.is_alive:
            return error_response(503, "the engine loop is not running")
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        body = {"model": state.model_name, "router": state.router_status(),
                "num_in_flight": state.engine_loop.num_in_flight, "sampling_defaults": state.sampling_defaults.to_json()}
        if state.is_draining:
            return JSONResponse({"status": "draining", **body}, status_code=503)
        if not state.engine_loop.is_alive:
            return JSONResponse({"status": "starting", **body}, status_code=503)
        return {"status": "ready", **body}

    @app.get("/metrics")
    async def metrics():
        state.metrics.observe_occupancy(state.engine_loop.snapshot)
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    return app
