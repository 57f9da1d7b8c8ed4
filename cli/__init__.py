"""The command-line layer every `python -m ...` command shares: flags from a dataclass config,
result files, plot style, and start-up errors as one line (`startup.exit_on_startup_error`).

Imports only `data`, so every package may import it.
"""
