"""Shared fixtures: tiny random Llama models and engines built in code (no download)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import torch

from engine import Decision, Engine, EngineConfig, StaticRouter
from tests.tiny_models import build_char_tokenizer, build_tiny_llama, noisy_copy, truncated_copy



@pytest.fixture(scope="session")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture(scope="session")
def target():
    return build_tiny_llama(seed=0, num_layers=2)


@pytest.fixture(scope="session")
def drafts(target):
    """A close noisy draft and a cheaper truncated one (different acceptance)."""
    return {"draft": noisy_copy(target, 0.05, seed=1), "small": truncated_copy(target, 1)}


@pytest.fixture
def make_engine(target, tokenizer, drafts):
    """make_engine(chain, k, **config) -> Engine over the tiny target and its drafts."""

    def build(chain=("target",), k: int = 0, **config) -> Engine:
        config.setdefault("max_model_len", 256)
        return Engine(target, tokenizer, EngineConfig(**config), drafts=drafts,
                      router=StaticRouter(Decision(tuple(chain), k)))

    return build


def pytest_configure(config):
    """Tiny models: one torch thread avoids oversubscription on 2 shared cores. `auto` is pinned to
    the fp32 path the tests' tolerances assume (the self-test's timing-based choice is tested on
    its own in tests/engine/test_autotune.py); subprocesses inherit the pin. Latency curves go to a
    directory of this run's own (subprocesses too), so no test reads a curve a server on this
    machine calibrated, nor writes one there."""
    torch.set_num_threads(1)
    if "SPECROUTE_CURVE_DIR" not in os.environ:
        config.specroute_curve_dir = os.environ["SPECROUTE_CURVE_DIR"] = tempfile.mkdtemp(prefix="specroute-curves-")
    from engine.linear_kernels import prepacked_available
    fp32_kernel = "prepacked" if prepacked_available(torch.float32, torch.device("cpu")) else "dense"
    os.environ.setdefault("SPECROUTE_AUTO_PATH", f"float32-{fp32_kernel}")


def pytest_unconfigure(config):
    directory = getattr(config, "specroute_curve_dir", None)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        del os.environ["SPECROUTE_CURVE_DIR"]


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped test is a failure: CI must never go green by skipping."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("CI") and reporter is not None and reporter.stats.get("skipped"):
        session.exitstatus = 1
