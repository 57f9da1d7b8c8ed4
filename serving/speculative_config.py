"""`--speculative-config '{...}'`: vLLM's JSON spelling of the speculation flags.

One JSON object whose keys map onto `python -m serving`'s own flags:

| key                      | value                                        | sets                          |
|--------------------------|----------------------------------------------|-------------------------------|
| `method`                 | `ngram`, `suffix`, `draft_model`, `eagle`    | the first level of the chain  |
| `model`                  | a checkpoint directory (draft_model, eagle)  | `--draft` / `--eagle`         |
| `num_speculative_tokens` | K >= 1 (needs `method`)                      | `--router <level>>target@K`   |
| `router`                 | `learned`, `cost-model`, `plain`             | `--router`                    |
| `quantized_levels`       | `"int4"`, `"int4,int8"` or a list            | `--quantized-levels`          |

`{"method": "ngram", "num_speculative_tokens": 4}` is `--router ngram>target@4` (a fixed
chain, as vLLM runs); `{"method": "draft_model", "model": "ckpt/draft"}` without K keeps the
router and gives it the draft level. An unknown key, a wrong type, `num_speculative_tokens`
beside `router`, or a flag given a non-default value that disagrees is a ValueError, which
the command line reports as a usage error (exit 2) before anything loads.
"""

from __future__ import annotations

import dataclasses

from serving.config import ROUTER_NAMES
from serving.json_types import parse_json_object

METHOD_LEVELS = {"ngram": "ngram", "suffix": "suffix", "draft_model": "draft", "eagle": "eagle"}
MODEL_FIELDS = {"draft_model": "draft", "eagle": "eagle"}       # the flag a method's `model` sets
KEYS = ("method", "model", "num_speculative_tokens", "router", "quantized_levels")


def parse_speculative_config(text: str) -> dict:
    """The JSON object `text` spells, its keys and value types checked; ValueError otherwise."""
    spec = parse_json_object(text, "speculative_config")
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise ValueError(f"speculative_config: unknown key(s) {', '.join(unknown)}; it takes {', '.join(KEYS)}")
    for key in ("method", "model", "router"):
        if key in spec and not isinstance(spec[key], str):
            raise ValueError(f"speculative_config: {key} must be a string, got {spec[key]!r}")
    k = spec.get("num_speculative_tokens")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"speculative_config: num_speculative_tokens must be an integer >= 1, got {k!r}")
    levels = spec.get("quantized_levels")
    if isinstance(levels, list) and all(isinstance(level, str) for level in levels):
        spec["quantized_levels"] = ",".join(levels)
    elif levels is not None and not isinstance(levels, str):
        raise ValueError(f"speculative_config: quantized_levels must be a string or a list of strings, got {levels!r}")
    return spec


def speculative_flags(spec: dict) -> dict[str, str]:
    """The ServerConfig fields (`router`, `draft`, `eagle`, `quantized_levels`) that `spec` sets."""
    method = spec.get("method")
    if method is not None and method not in METHOD_LEVELS:
        raise ValueError(f"speculative_config: method must be one of {', '.join(METHOD_LEVELS)}, got {method!r}")
    flags: dict[str, str] = {}
    if "model" in spec:
        if method not in MODEL_FIELDS:
            raise ValueError(f"speculative_config: model needs method {' or '.join(MODEL_FIELDS)}")
        flags[MODEL_FIELDS[method]] = spec["model"]
    if "num_speculative_tokens" in spec:
        if method is None or "router" in spec:
            raise ValueError("speculative_config: num_speculative_tokens needs a method and no router "
                             "(it fixes the chain <method>>target@K)")
        flags["router"] = f"{METHOD_LEVELS[method]}>target@{spec['num_speculative_tokens']}"
    if "router" in spec:
        router = "cost-model" if spec["router"] == "cost_model" else spec["router"]
        if router not in ROUTER_NAMES + ("plain",):
            raise ValueError(f"speculative_config: router must be learned, cost-model or plain, got {router!r}")
        flags["router"] = router
    if "quantized_levels" in spec:
        flags["quantized_levels"] = spec["quantized_levels"]
    return flags


def apply_speculative_config(config) -> None:
    """Set `config`'s fields from `config.speculative_config`; ValueError for a flag given another value."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for name, value in speculative_flags(parse_speculative_config(config.speculative_config)).items():
        given = getattr(config, name)
        if given != defaults[name] and given != value:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} {given!r} conflicts with speculative_config, which sets it to {value!r}")
        setattr(config, name, value)
