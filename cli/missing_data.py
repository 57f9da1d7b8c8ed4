"""A command that needs the data sets and cannot find them says so in one line and exits 2.

Every `python -m` command that reads prompts or traces runs its body inside this guard:

    if __name__ == "__main__":
        with exit_on_missing_data():
            main(parse_dataclass(Config))

so a user without `../shared/data` (or with $SPECROUTE_DATA pointing at the wrong place) reads

    python -m agents.evaluate: error: data directory /x does not exist; set SPECROUTE_DATA=...

instead of a traceback from deep inside a prompt reader. Exit code 2 is argparse's usage error:
the fix is in how the command was run, not in the code. Any other error is left as it is.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from cli.dataclass_args import running_command
from data.paths import missing_data_message

USAGE_ERROR = 2


@contextlib.contextmanager
def exit_on_missing_data() -> Iterator[None]:
    """Turn a missing data set (see `data.paths.missing_data_message`) into one `error:` line on
    stderr and exit code 2."""
    try:
        yield
    except FileNotFoundError as error:
        message = missing_data_message(error)
        if message is None:
            raise
        print(f"{running_command()}: error: {message}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None
