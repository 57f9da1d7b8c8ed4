"""SpecRoute serving: the OpenAI-compatible FastAPI server, its engine loop, guarded router and load generator.

Imports data, cli, engine, router and env; never agents or bench: the learned policy it serves lives in router (tests/test_layout.py).
"""

from serving.app import ServingState, create_app
from serving.config import ServerConfig
from serving.engine_loop import EngineLoop
from serving.router import GuardedRouter

__all__ = ["EngineLoop", "GuardedRouter", "ServerConfig", "ServingState", "create_app"]
