"""Serving fixtures: the app around a tiny engine, in-process and behind real uvicorn on loopback."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save as save_safetensors

from engine import Decision, StaticRouter
from router.checkpoint import ActionSpec, LayerSpec, Manifest, sha256_of, write_manifest
from serving.app import ServingState, create_app
from serving.config import ServerConfig
from serving.launch import build_observer, state_for_engine
from serving.server import build_server

MODEL = "tiny"


@pytest.fixture
def make_state(make_engine):
    """make_state(chain, k, **server_config) -> ServingState over a tiny engine (static fallback)."""

    def build(chain=("ngram", "target"), k: int = 3, **config) -> ServingState:
        config.setdefault("policy", "")
        config.setdefault("decision_log", "")
        config.setdefault("max_model_len", 256)
        config.setdefault("max_num_seqs", 4)
        config.setdefault("max_queue", 4)
        cfg = ServerConfig(**config)
        engine = make_engine(chain, k, max_model_len=cfg.max_model_len, max_num_seqs=cfg.max_num_seqs)
        return state_for_engine(engine, cfg, MODEL, fallback=StaticRouter(Decision(tuple(chain), k)))

    return build


@pytest.fixture
def client(make_state):
    with TestClient(create_app(make_state())) as test_client:
        yield test_client


@contextlib.contextmanager
def live_server(state: ServingState):
    """The app behind real uvicorn on a free loopback port, in a thread; yields the base URL."""
    with live_server_handle(state) as (url, _server, _thread):
        yield url


@contextlib.contextmanager
def live_server_handle(state: ServingState):
    """As `live_server`, yielding (url, the uvicorn server, its thread) to signal and watch it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = build_server(state, "127.0.0.1", port, drain_timeout_s=min(state.config.drain_timeout_s, 5),
                          log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server, thread
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


class SlowRouter:
    """Wraps a router and sleeps each step, so a request stays in flight long enough to act on it."""

    def __init__(self, inner, delay_s: float):
        self.inner, self.delay_s = inner, delay_s

    def decide(self, view):
        time.sleep(self.delay_s)
        return self.inner.decide(view)


def write_checkpoint(directory: Path, config: ServerConfig, actions: list[Decision], *, preferred: int = 0,
                     scale: float = 1.0, obs_max: float | None = None) -> Path:
    """A one-layer policy checkpoint whose observation spec matches a server with `config`.

    It prefers action `preferred` (by its bias); `scale` multiplies the weights (huge -> inf
    output); `obs_max` overrides every feature's training maximum (small -> out of range).
    """
    spec = build_observer(config, actions).builder.spec
    n, m = len(spec.names), len(actions)
    weight = np.full((m, n), 1e-3 * scale, dtype=np.float32)
    bias = np.zeros(m, dtype=np.float32)
    bias[preferred] = 1.0
    if scale > 1.0:     # every output starts at float32's largest finite value: any feature tips it to inf
        bias[:] = np.finfo(np.float32).max
    data = save_safetensors({"layers.0.weight": weight, "layers.0.bias": bias})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policy.safetensors").write_bytes(data)
    high = spec.high if obs_max is None else np.full(n, obs_max, dtype=np.float32)
    manifest = Manifest(algo="ppo", obs_spec_version=spec.version, obs_names=spec.names,
                        actions=[ActionSpec.from_decision(a) for a in actions],
                        layers=[LayerSpec("layers.0", n, m, "identity")], output="logits",
                        obs_min=[float(v) for v in spec.low], obs_max=[float(v) for v in high],
                        sha256=sha256_of(data), weights_bytes=len(data))
    write_manifest(directory, manifest)
    return directory
