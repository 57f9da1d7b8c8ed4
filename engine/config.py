"""Engine settings, checked on construction, and the fields commands share with them.

A command that exposes an engine knob declares it with `engine_field("max_num_seqs")`, so its
flag, default and help are the engine's: one name and one value per knob (issue 27).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from engine.linear_kernels import QUANTIZED_FORMATS
from engine.precision import ATTENTION_CHOICES, PrecisionArgs, check_choices


@dataclass
class EngineConfig(PrecisionArgs):
    """Args (dtype, kernel, weights, device, attention: `PrecisionArgs`):
        max_num_seqs: most requests running at once (continuous batching; vLLM's name).
        max_num_tokens: most tokens (prompt + output) held by the running batch.
        max_model_len: context length; prompts must be shorter, generation stops at it.
        ngram_max_match / ngram_min_match: prompt-lookup n-gram sizes.
        suffix_max_match: longest suffix the suffix drafter matches.
        suffix_max_history: finished outputs the suffix drafter remembers.
        kernel `prepacked` reorders the weights once into oneDNN's blocked layout; what verifying
            9 or 16 tokens costs against a decode step is measured per machine: 1.7x / 1.8x on
            the Zen 3 of bench/results/engine.md. attention `invariant` (engine/attention.py)
            reduces in an order fixed by each query's position, so decode and verification agree
            in every bit where the products are row-invariant (the self-test checks); `sdpa` is
            torch's kernel, exact only by fp32 margin.
        catch_up_threshold: a row with more pending tokens than this is caught up in forwards
            of its own when the batch also has decoding rows (engine/levels.py).
        token_budget: most padded positions (rows x longest feed) of one forward; longer
            prompts are prefilled in slices of it.
        release_model_weights: on the prepacked and quantized paths, free the model's own copy of
            each decoder matrix once its kernel holds it (one copy in memory, -540 MB for SmolLM2
            in fp32). The model's layers are then shells that runners over this model can still
            use but a copy of the model cannot: set it where the engine owns its model (the
            server and the commands do).
        quantized_levels: comma-separated weight formats (`int4`, `int8`) of quantized copies
            of the target to add as levels named after the format, for chains such as
            `ngram,draft,int4,target` (SpecRouter's intermediate level). A copy shares the
            target's embedding and norms and holds only its quantized matrices (int4: ~70 MB for
            SmolLM2) and its own KV cache; the target still verifies, so output is unchanged.
        shadow_draft_length: tokens per shadow proposal of the model-free drafters a row does not
            run, scored against its committed tokens so the trackers learn every request's
            n-gram/suffix acceptance for free (engine/shadow_drafts.py); 0 turns it off.
    """

    max_num_seqs: int = field(default=16, metadata={
        "help": "most requests decoded together (continuous batching)", "aliases": ["--max-batch"]})
    max_num_tokens: int = 32768
    max_model_len: int = field(default=2048, metadata={"help": "context length: prompt + max_tokens must fit"})
    ngram_max_match: int = 3
    ngram_min_match: int = 1
    suffix_max_match: int = 6
    suffix_max_history: int = 256
    shadow_draft_length: int = 8
    catch_up_threshold: int = 32
    token_budget: int = 2048
    release_model_weights: bool = False
    quantized_levels: str = field(default="", metadata={
        "help": "quantized copies of the target added as intermediate levels (int4, int8; '' = none), "
                "for chains such as ngram,draft,int4,target", "aliases": ["--quantized"]})

    @property
    def quantized_formats(self) -> tuple[str, ...]:
        return parse_quantized_levels(self.quantized_levels)

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_tokens", "max_model_len", "catch_up_threshold", "token_budget"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.shadow_draft_length < 0:
            raise ValueError(f"shadow_draft_length must be >= 0, got {self.shadow_draft_length}")
        check_choices(self.dtype, self.kernel, self.weights, self.device)
        if self.attention not in ATTENTION_CHOICES:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_CHOICES)}, got {self.attention!r}")
        parse_quantized_levels(self.quantized_levels)
        if self.max_num_tokens < self.max_model_len:
            raise ValueError("max_num_tokens must be at least max_model_len")


# What a command that loads its own model uses where a bare EngineConfig (a library caller, a
# test) does not: the int4 copy costs ~70 MB and gives the router its intermediate level.
COMMAND_DEFAULTS = {"quantized_levels": "int4"}


def engine_field(name: str) -> dataclasses.Field:
    """A command's field for the EngineConfig knob `name`: the engine's help, aliases and
    default (COMMAND_DEFAULTS where a command's differs from a bare engine's)."""
    spec = next(spec for spec in dataclasses.fields(EngineConfig) if spec.name == name)
    return field(default=COMMAND_DEFAULTS.get(name, spec.default), metadata=spec.metadata)


def num_threads_field(default: int = 0, help_text: str = "torch intra-op threads (0 keeps torch's default)"):
    """`--num-threads`, vLLM's and every command's name for torch's thread count (the process
    applies it; an Engine never does); `--torch-threads` is its old spelling."""
    return field(default=default, metadata={"help": help_text, "aliases": ["--torch-threads"]})


def parse_quantized_levels(text: str) -> tuple[str, ...]:
    """`"int4,int8"` -> ("int4", "int8"); ValueError for an unknown or repeated format."""
    formats = tuple(part.strip() for part in text.split(",") if part.strip())
    for fmt in formats:
        if fmt not in QUANTIZED_FORMATS:
            raise ValueError(f"quantized_levels may list {', '.join(QUANTIZED_FORMATS)}, got {fmt!r}")
    if len(set(formats)) != len(formats):
        raise ValueError(f"quantized_levels lists a format twice: {text!r}")
    return formats


def parse_draft_specs(entries: list[str] | tuple[str, ...], reserved: tuple[str, ...] = ()) -> dict[str, str]:
    """`--draft` values, `NAME=PATH` or a bare `PATH` (the level named `draft`), as {name: path};
    ValueError for an empty part, a name given twice or one in `reserved`."""
    paths: dict[str, str] = {}
    for entry in entries:
        name, sep, path = entry.partition("=") if "=" in entry else ("draft", "=", entry)
        name = name.strip()
        if not name or not path:
            raise ValueError(f"--draft takes PATH or NAME=PATH, got {entry!r}")
        if name in paths or name in reserved:
            raise ValueError(f"draft name {name!r} is reserved or given twice")
        paths[name] = path
    return paths
