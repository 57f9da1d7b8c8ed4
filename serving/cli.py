"""Old home of `parse_dataclass`, which now lives in `engine.dataclass_args`.

Only `bench/bench_chains.py` still imports it from here; delete this file once it imports
`engine.dataclass_args` instead.
"""

from engine.dataclass_args import parse_dataclass

__all__ = ["parse_dataclass"]
