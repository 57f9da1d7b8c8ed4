"""`python -m bench.bench_chains`'s settings: every field is one of its flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.common import check_spec_bench_args, parse_categories
from engine.config import engine_field, num_threads_field
from engine.precision import PrecisionArgs
from serving.config import ServerConfig


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{flag} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise ValueError(f"--{flag} needs values > 0, got {text!r}")
    return values


@dataclass
class ChainsBenchArgs(PrecisionArgs):
    """Benchmark plain decoding, every static (chain, K) and the cost-model router, batch 1 and under load."""

    model: str = field(default="default", metadata={"help": "'default' (embedded SmolLM2) or a local path"})
    draft: str = field(default="checkpoints/draft", metadata={
        "help": "trained draft directory; its chains run when it has a manifest.json"})
    prompts_per_category: int = field(default=1, metadata={"help": "Spec-Bench prompts per category (batch 1)"})
    categories: str = field(default="", metadata={"help": "comma-separated categories; empty = all 13"})
    max_tokens: int = field(default=48, metadata={"help": "new tokens per request (greedy; EOS may stop earlier)",
                                                  "aliases": ["--max-new-tokens"]})
    ks: str = field(default="2,4,8", metadata={"help": "K values of every static chain"})
    concurrency: str = field(default="1,4,8,16", metadata={"help": "requests in flight in the load part; '' skips it"})
    requests_per_slot: int = field(default=2, metadata={
        "help": "the load part completes max(4, this x concurrency) distinct requests per column"})
    max_load_prompt_tokens: int = field(default=512, metadata={
        "help": "the load part leaves out longer prompts (0 = none): a long prompt's prefill dominates the "
                "steps it joins whatever the router does, and bounds the KV the batch-16 RSS figure holds"})
    load_columns: str = field(default="best", metadata={
        "help": "columns under load: 'best' (plain, cost model, each chain at its best K on the batch-1 mix) "
                "or 'all'", "choices": ["best", "all"]})
    profile: str = field(default="", metadata={
        "help": "latency profile of the cost model (default profiles/<model name>.json, as the server)"})
    profile_budget_s: float = field(default=30.0, metadata={
        "help": "seconds to measure levels the profile lacks (the draft), as the server does"})
    slo_tpot_s: float = field(default=ServerConfig.slo_tpot_s, metadata={
        "help": "the cost model's TPOT SLO in seconds (the server's default)", "aliases": {"--slo-tpot-ms": 1e-3}})
    llama_cpp: bool = field(default=True, metadata={
        "help": "run llama.cpp on the same GGUF at batch 1 as the speed anchor (skipped, with the reason "
                "printed, when llama-cpp-python is not installed or the model is not a GGUF)"})
    policy: str = field(default="checkpoints/router", metadata={
        "help": "learned policy checkpoint run as the server runs it (its column is left out, with the "
                "reason printed, when it cannot load here); '' = no learned column"})
    seed: int = field(default=0, metadata={"help": "prompt sampling seed (bench.common.sample_prompts)"})
    repeats: int = field(default=3, metadata={
        "help": "runs of plain and the cost model (batch 1: per prompt; under load: per concurrency), "
                "interleaved; their figures are the median run (one run varies by +-15%% on a shared CPU)"})
    num_threads: int = num_threads_field()
    max_minutes: float = field(default=0.0, metadata={
        "help": "time limit: batch 1 starts no prompt after 0.6 of it, the load part no column after all of it; 0 = none"})
    quantized_levels: str = engine_field("quantized_levels")
    output_name: str = field(default="chains", metadata={"help": "writes <output-dir>/<output-name>.json and .md"})
    output_dir: str = field(default="", metadata={"help": "directory of the result files; empty = bench/results",
                                                  "aliases": ["--results-dir"]})

    def __post_init__(self) -> None:
        check_spec_bench_args(self.prompts_per_category, self.max_tokens, self.categories, self.output_name)
        if self.repeats <= 0:
            raise ValueError("--repeats must be > 0")
        if self.requests_per_slot <= 0:
            raise ValueError("--requests-per-slot must be > 0")
        if self.max_load_prompt_tokens < 0:
            raise ValueError("--max-load-prompt-tokens must be >= 0")
        if self.num_threads < 0 or self.max_minutes < 0 or self.profile_budget_s <= 0 or self.slo_tpot_s <= 0:
            raise ValueError("--num-threads and --max-minutes must be >= 0; --profile-budget-s, --slo-tpot-s > 0")
        _int_list(self.ks, "ks")                # bad lists fail here, not after the model loaded
        if self.concurrency.strip():
            _int_list(self.concurrency, "concurrency")
        if self.load_columns not in ("best", "all"):
            raise ValueError(f"--load-columns must be 'best' or 'all', got {self.load_columns!r}")

    @property
    def category_list(self) -> list[str]:
        return parse_categories(self.categories)

    @property
    def k_list(self) -> list[int]:
        return _int_list(self.ks, "ks")

    @property
    def concurrency_list(self) -> list[int]:
        return _int_list(self.concurrency, "concurrency") if self.concurrency.strip() else []

    def num_load_requests(self, concurrency: int) -> int:
        return max(4, self.requests_per_slot * concurrency)
