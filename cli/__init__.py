"""The command-line layer every `python -m ...` command shares: flags from a dataclass config.

Imports only `data`, so every package may import it.
"""
