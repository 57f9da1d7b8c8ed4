"""`python -m serving`: the OpenAI-compatible server (see `--help`)."""

from __future__ import annotations

import logging
import signal
import sys

from cli.dataclass_args import parse_dataclass
from serving.config import ServerConfig


def _exit_cleanly(signum, frame) -> None:
    """SIGTERM before uvicorn runs (loading) or after its drain: exit with status 0."""
    raise SystemExit(0)


def main(config: ServerConfig) -> None:
    from serving.launch import build_state
    from serving.server import serve

    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = build_state(config)
    logging.getLogger("serving").info("serving %s on http://%s:%d (max_num_seqs %d, max_queue %d)",
                                      state.model_name, config.host, config.port, config.max_num_seqs, config.max_queue)
    serve(state, config.host, config.port, config.drain_timeout_s, config.log_level)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_cleanly)
    main(parse_dataclass(ServerConfig, description="SpecRoute OpenAI-compatible server", prog="python -m serving"))
