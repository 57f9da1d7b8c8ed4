"""The command-line layer every `python -m ...` command shares: flags from a dataclass config, result files, plot style.

Imports only `data`, so every package may import it.
"""
