"""Start-up failures as one line on stderr and exit status 2, never a traceback.

    with exit_on_startup_error("python -m serving", ModelLoadError, OSError, ValueError):
        state = build_state(config)

A bad model path, checkpoint or profile is the user's to fix, and one `prog: error: ...` line
(argparse's form, the same status as a bad flag) says what to fix; a traceback buries it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def exit_on_startup_error(prog: str, *kinds: type[BaseException]) -> Iterator[None]:
    """Turn an exception of `kinds` raised inside the block into `prog: error: <message>` and exit 2
    (the traceback is logged at DEBUG, for whoever runs with debug logging)."""
    try:
        yield
    except kinds as exc:
        logging.getLogger(prog).debug("start-up failed", exc_info=True)
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
