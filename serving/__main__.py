"""`python -m serving`: the OpenAI-compatible server (see `--help`)."""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys

from cli.dataclass_args import parse_dataclass
from cli.startup import exit_on_startup_error
from serving.config import ServerConfig

PROG = "python -m serving"


def _exit_cleanly(signum, frame) -> None:
    """SIGTERM before uvicorn runs (loading) or after its drain: exit with status 0."""
    raise SystemExit(0)


def main(config: ServerConfig) -> None:
    """Load, then serve until SIGTERM; a model, draft, checkpoint or profile that cannot be used
    ends the start-up with one `error:` line and exit status 2."""
    from engine.models import ModelLoadError
    from router.checkpoint import CheckpointError
    from serving.auth import api_key_from_env
    from serving.launch import build_state
    from serving.server import serve

    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = dataclasses.replace(config, api_key=api_key_from_env(config.api_key))
    with exit_on_startup_error(PROG, ModelLoadError, CheckpointError, OSError, ValueError):
        state = build_state(config)
    logging.getLogger("serving").info("serving %s on http://%s:%d (max_num_seqs %d, max_queue %d)",
                                      state.model_name, config.host, config.port, config.max_num_seqs, config.max_queue)
    serve(state, config.host, config.port, config.drain_timeout_s, config.log_level)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_cleanly)
    main(parse_dataclass(ServerConfig, description="SpecRoute OpenAI-compatible server", prog=PROG))
