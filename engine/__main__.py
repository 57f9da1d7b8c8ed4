"""`python -m engine generate ...`: generate text with a chosen chain of the ladder and print
the text with its speculation stats; `python -m engine chains` lists the levels a chain may use.

Bad input (unknown drafter, K < 0, a missing model path, ...) prints one `error:` line and exits
with code 2, as argparse does; anything else that fails is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field

from cli.dataclass_args import DataclassArgumentParser, add_dataclass_arguments
from engine.config import num_threads_field, parse_draft_specs
from engine.decision import TARGET, Decision, validate_decision
from engine.drafters import MODEL_FREE_DRAFTERS
from engine.linear_kernels import QUANTIZED_FORMATS
from engine.precision import PrecisionArgs
from engine.sampling import SamplingParams

PROG = "python -m engine"
EXIT_BAD_INPUT = 2


class BadInput(ValueError):
    """The user asked for something we cannot do; reported as one line, exit code 2."""


@dataclass
class GenerateArgs(PrecisionArgs):
    """Generate text for one prompt with speculative decoding; print the text and its stats."""

    prompt: str = field(default="", metadata={"help": "the prompt text (required)"})
    model: str = field(default="default", metadata={
        "help": "'default' (embedded SmolLM2-135M-Instruct), a local Hugging Face directory or a .gguf file"})
    chain: str = field(default="ngram>target", metadata={
        "help": "levels joined by '>', cheapest first, ending at 'target' (see `chains`); "
                "int4 / int8 name the target's quantized copy, e.g. ngram>int4>target "
                "(the old comma form ngram,int4,target still works, with a warning)"})
    k: int = field(default=4, metadata={"help": "tokens the first level drafts per step; 0 = plain decoding"})
    draft_p_min: float = field(default=0.0, metadata={
        "help": "a model first level stops drafting at the first token whose top-1 probability is "
                "below this (llama.cpp's --draft-p-min); 0 always drafts K"})
    max_tokens: int = field(default=128, metadata={"help": "most new tokens to generate",
                                                   "aliases": ["--max-new-tokens"]})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy; > 0 samples (still lossless)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass; 1 disables it"})
    top_k: int = field(default=0, metadata={"help": "keep the k most likely tokens; 0 disables it"})
    seed: int | None = field(default=None, metadata={"help": "sampling seed (same seed, same text)"})
    chat: bool | None = field(default=None, metadata={
        "help": "wrap the prompt in the tokenizer's chat template (default: when the tokenizer has one)"})
    draft: list[str] = field(default_factory=list, metadata={
        "help": "draft models as PATH (the level 'draft') or NAME=PATH: a distilled draft checkpoint (python -m distill.draft), an "
                "EAGLE head (python -m distill.eagle) or a local HF directory / .gguf file sharing the "
                "target's tokenizer"})
    num_threads: int = num_threads_field()
    json: bool = field(default=False, metadata={"help": "print one JSON object (text + stats) instead"})

    def __post_init__(self) -> None:
        if not self.prompt:
            raise BadInput("--prompt is required and must not be empty")
        if self.num_threads < 0:
            raise BadInput(f"--num-threads must be >= 0, got {self.num_threads}")
        decision = self.decision          # parses and checks the chain and K
        _ = self.sampling_params          # checks the sampling values
        try:
            validate_decision(decision, set(MODEL_FREE_DRAFTERS) | {TARGET} | set(QUANTIZED_FORMATS) | set(self.draft_paths),
                              MODEL_FREE_DRAFTERS)
        except ValueError as exc:
            raise BadInput(str(exc)) from None

    @property
    def decision(self) -> Decision:
        try:
            return Decision(self.chain, self.k, self.draft_p_min)
        except ValueError as error:
            raise BadInput(str(error)) from None

    @property
    def sampling_params(self) -> SamplingParams:
        try:
            return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                                  top_k=self.top_k, seed=self.seed)
        except ValueError as error:
            raise BadInput(str(error)) from None

    @property
    def draft_paths(self) -> dict[str, str]:
        try:
            return parse_draft_specs(self.draft, reserved=(TARGET, *MODEL_FREE_DRAFTERS))
        except ValueError as error:
            raise BadInput(str(error)) from None


@dataclass
class GenerationReport:
    """What `generate` prints: the text and how speculation went."""

    text: str
    model: str
    chain: str
    num_prompt_tokens: int
    num_output_tokens: int
    finish_reason: str
    elapsed_s: float
    num_steps: int
    num_draft_tokens: int
    num_accepted_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.num_output_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0

    @property
    def mean_accepted_per_step(self) -> float:
        return self.num_accepted_tokens / self.num_steps if self.num_steps else 0.0

    @property
    def tokens_per_step(self) -> float:
        return self.num_output_tokens / self.num_steps if self.num_steps else 0.0

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        for name in ("tokens_per_s", "acceptance_rate", "mean_accepted_per_step", "tokens_per_step"):
            data[name] = getattr(self, name)
        return data

    def summary(self) -> str:
        return (f"[{self.model} | chain {self.chain}] {self.num_output_tokens} tokens in {self.elapsed_s:.2f} s "
                f"= {self.tokens_per_s:.1f} tokens/s (prefill included) | steps {self.num_steps} | "
                f"acceptance {self.acceptance_rate:.2f} ({self.num_accepted_tokens}/{self.num_draft_tokens} drafted) | "
                f"mean accepted/step {self.mean_accepted_per_step:.2f} | tokens/step {self.tokens_per_step:.2f} | "
                f"finish {self.finish_reason}")


def generate(cfg: GenerateArgs) -> GenerationReport:
    """Load the model(s), run the request to completion and return what happened."""
    import torch

    from engine.build import DraftSpec
    from engine.config import EngineConfig
    from engine.decision import StaticRouter
    from engine.engine import Engine
    from engine.models import ModelLoadError

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    # a draft checkpoint (either kind) or any local causal LM sharing the tokenizer; a missing
    # path fails before the (slow) target load
    drafts = [DraftSpec(name, path, kind=None) for name, path in cfg.draft_paths.items()]
    quantized = ",".join(name for name in cfg.decision.chain if name in QUANTIZED_FORMATS)
    try:
        engine = Engine.from_pretrained(cfg.model, drafts=drafts, router=StaticRouter(cfg.decision),
                                        config=EngineConfig(quantized_levels=quantized,
                                                            **cfg.precision_kwargs(release_model_weights=True)))
    except ModelLoadError as error:
        raise BadInput(str(error)) from None
    engine.validate_decision(cfg.decision)
    has_template = bool(getattr(engine.tokenizer, "chat_template", None))
    use_chat = has_template if cfg.chat is None else cfg.chat
    if use_chat and not has_template:
        raise BadInput(f"--chat: the tokenizer of {engine.model_name} has no chat template")
    prompt = [{"role": "user", "content": cfg.prompt}] if use_chat else cfg.prompt
    start = time.perf_counter()
    request_id = engine.add_request(prompt, cfg.sampling_params)
    num_prompt_tokens = len(engine.scheduler.requests[request_id].prompt_token_ids)
    final = None
    while engine.has_unfinished:
        for output in engine.step():
            if output.finished:
                final = output
    elapsed = time.perf_counter() - start
    return GenerationReport(
        text=final.text or "", model=engine.model_name, chain=cfg.decision.label, num_prompt_tokens=num_prompt_tokens,
        num_output_tokens=len(final.output_token_ids), finish_reason=final.finish_reason.value, elapsed_s=elapsed,
        num_steps=final.stats.num_steps, num_draft_tokens=final.stats.num_draft_tokens,
        num_accepted_tokens=final.stats.num_accepted_tokens)


def main(cfg: GenerateArgs) -> GenerationReport:
    report = generate(cfg)
    if cfg.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        print(report.text)
        print("---")
        print(report.summary())
    return report


def list_chains() -> None:
    print("levels (cheapest first):")
    for name, drafter in MODEL_FREE_DRAFTERS.items():
        doc = (sys.modules[drafter.__module__].__doc__ or "").strip().splitlines()[0]
        print(f"  {name:<8} model-free: {doc}")
    print("  NAME     a draft model given with --draft NAME=PATH (--draft PATH: the level 'draft')")

    for name in QUANTIZED_FORMATS:
        print(f"  {name:<8} the target's own {name} weight-only copy (built at load, shares its embedding)")
    print(f"  {TARGET:<8} the model being served (every chain ends here)")
    print("a chain is an ordered subset ending at 'target'; a model-free drafter may only start it,")
    print("e.g. --chain target (plain), ngram>target, draft>target, ngram>draft>int4>target")


# ---- command line ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = DataclassArgumentParser(prog=PROG, description=__doc__.strip().splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    generate_parser = commands.add_parser("generate", help=GenerateArgs.__doc__.strip().splitlines()[0],
                                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataclass_arguments(generate_parser, GenerateArgs)
    commands.add_parser("chains", help="list the levels a chain may use")
    return parser


def cli(argv: list[str] | None = None) -> int:
    """Parse, run, and turn bad input into one line on stderr and exit code 2."""
    namespace = vars(build_parser().parse_args(argv))
    command = namespace.pop("command")
    try:
        if command == "chains":
            list_chains()
        else:
            main(GenerateArgs(**namespace))
    except ValueError as error:          # BadInput, and the engine's own checks on a request
        message = " ".join(str(error).split())
        print(f"{PROG} {command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(cli())
