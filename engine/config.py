"""Engine settings, checked on construction."""

from __future__ import annotations

from dataclasses import dataclass

from engine.linear_kernels import QUANTIZED_FORMATS
from engine.precision import ATTENTION_CHOICES, check_choices


@dataclass
class EngineConfig:
    """Args:
        max_batch: most requests running at once (continuous batching).
        max_num_tokens: most tokens (prompt + output) held by the running batch.
        max_model_len: context length; prompts must be shorter, generation stops at it.
        ngram_max_match / ngram_min_match: prompt-lookup n-gram sizes.
        suffix_max_match: longest suffix the suffix drafter matches.
        suffix_max_history: finished outputs the suffix drafter remembers.
        num_threads: torch intra-op threads (0 keeps torch's default) for the command that owns the
            process to apply (engine, serving, env.calibrate, engine.profile); the Engine never does.
        dtype: `auto` (on CPU: the fastest batch-invariant path of the cached self-test,
            engine/autotune), `float32` or `bfloat16`.
        kernel: `auto` (the self-test's), `dense` or `prepacked` (weights reordered once into
            oneDNN's blocked layout; what verifying 9 or 16 tokens costs against a decode step
            is measured per machine: 1.7x / 1.8x on the Zen 3 of bench/results/engine.md).
        weights: `dense`, or `int8` / `int4` weight-only quantization (a different model).
        device: `auto` (cuda when available), `cpu` or `cuda`.
        attention: the target's attention. `invariant` (engine/attention.py) reduces in an order
            fixed by each query's position, so decode and verification agree in every bit where
            the products are row-invariant (the self-test checks); `sdpa` is torch's kernel,
            exact only by fp32 margin.
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

    max_batch: int = 16
    max_num_tokens: int = 32768
    max_model_len: int = 2048
    ngram_max_match: int = 3
    ngram_min_match: int = 1
    suffix_max_match: int = 6
    suffix_max_history: int = 256
    num_threads: int = 0
    shadow_draft_length: int = 8
    dtype: str = "auto"
    kernel: str = "auto"
    weights: str = "dense"
    device: str = "auto"
    attention: str = "invariant"
    catch_up_threshold: int = 32
    token_budget: int = 2048
    release_model_weights: bool = False
    quantized_levels: str = ""

    @property
    def quantized_formats(self) -> tuple[str, ...]:
        return parse_quantized_levels(self.quantized_levels)

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_num_tokens", "max_model_len", "catch_up_threshold", "token_budget"):
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


def parse_quantized_levels(text: str) -> tuple[str, ...]:
    """`"int4,int8"` -> ("int4", "int8"); ValueError for an unknown or repeated format."""
    formats = tuple(part.strip() for part in text.split(",") if part.strip())
    for fmt in formats:
        if fmt not in QUANTIZED_FORMATS:
            raise ValueError(f"quantized_levels may list {', '.join(QUANTIZED_FORMATS)}, got {fmt!r}")
    if len(set(formats)) != len(formats):
        raise ValueError(f"quantized_levels lists a format twice: {text!r}")
    return formats
