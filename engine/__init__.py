"""SpecRoute engine: models, drafters, KV caches with rollback, verification, the multi-level step.

Imports data and cli only; everything else in the project builds on it (tests/test_layout.py).
"""

from engine.batch_view import BatchView, Router, RowView
from engine.config import EngineConfig
from engine.decision import TARGET, Decision, StaticRouter
from engine.engine import Engine, StepRecord
from engine.sampling import SamplingParams
from engine.sequence import FinishReason, Request, RequestOutput

__all__ = ["BatchView", "Decision", "Engine", "EngineConfig", "FinishReason", "Request", "RequestOutput",
           "Router", "RowView", "SamplingParams", "StaticRouter", "StepRecord", "TARGET"]
