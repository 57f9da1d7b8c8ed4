"""The command-line layer every `python -m ...` command shares: flags from a dataclass config.

Imports nothing of the project, so every package may import it.
"""
