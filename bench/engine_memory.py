"""The engine with the levels the server loads (draft, EAGLE head, int4 copy) on the default
forward path at batch 16, alone in this process: peak RSS (and each level's peak KV) and the
share of a step that is not model forward. bench_engine runs it as a subprocess and reads the
JSON line it prints last. `--chain draft,int4,target` runs a chain so that its levels hold KV
too. The prompts are Spec-Bench's, long ones included (summarization and RAG, ~1000 tokens): the
KV cache holds every row at the longest row's length.

    .venv/bin/python -m bench.engine_memory --num-threads 2
    .venv/bin/python -m bench.engine_memory --num-threads 2 --chain ngram,draft,int4,target --k 4
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import torch

from bench.bench_models import encode_chat
from bench.common import REPO_ROOT, PeakRSS, sample_prompts
from bench.engine_columns import ForwardTimer
from engine import Decision, Engine, EngineConfig, SamplingParams, StaticRouter
from cli.dataclass_args import parse_dataclass
from engine.config import engine_field, num_threads_field
from engine.precision import PrecisionArgs


@dataclass
class MemoryArgs(PrecisionArgs):
    """Peak RSS and non-forward share of a batch-16 plain run (engine + every level the server loads)."""

    max_num_seqs: int = field(default=16, metadata={"help": "requests running at once", "aliases": ["--batch"]})
    max_tokens: int = field(default=64, metadata={"help": "new tokens per request", "aliases": ["--max-new-tokens"]})
    draft: str = field(default="checkpoints/draft", metadata={"help": "draft checkpoint (loaded when present)"})
    eagle: str = field(default="checkpoints/eagle", metadata={"help": "EAGLE head checkpoint (loaded when present)"})
    quantized_levels: str = engine_field("quantized_levels")
    chain: str = field(default="", metadata={
        "help": "run this chain (e.g. draft>int4>target) at --k instead of plain decoding, so its levels hold KV too"})
    k: int = field(default=4, metadata={"help": "draft length of --chain"})
    num_threads: int = num_threads_field()


def main(cfg: MemoryArgs) -> dict:
    from engine.build import DraftSpec
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    drafts = [DraftSpec("draft", REPO_ROOT / cfg.draft, if_absent="skip")]      # as the server loads them
    if cfg.eagle:
        drafts.append(DraftSpec("eagle", REPO_ROOT / cfg.eagle, kind="eagle", if_absent="skip", if_unusable="skip"))
    engine = Engine.from_pretrained("default", drafts=drafts,
                                    config=EngineConfig(max_num_seqs=cfg.max_num_seqs, quantized_levels=cfg.quantized_levels,
                                                        **cfg.precision_kwargs(release_model_weights=True)))
    if cfg.chain:
        engine.set_router(StaticRouter(Decision(cfg.chain, cfg.k)))
    # VmHWM, not ru_maxrss: a child started from a large parent inherits the parent's size in
    # ru_maxrss at the fork, while VmHWM starts anew at exec
    rss = PeakRSS()
    built_mb = rss.read_mb()
    timer = ForwardTimer(engine.levels["target"].runner)
    prompts = sample_prompts(2, None, 1)[: cfg.max_num_seqs]
    params = SamplingParams(max_tokens=cfg.max_tokens, ignore_eos=True)
    for prompt in prompts:
        engine.add_request(encode_chat(engine.tokenizer, prompt.text), params)
    # the decode phase only: the first step admits and prefills all 16 (model time by nature)
    engine.step()
    start, forward_before, steps = time.perf_counter(), timer.total_s, 0
    kv_peak = {name: 0.0 for name in engine.levels}
    while engine.has_unfinished:
        engine.step()
        steps += 1
        for name, level in engine.levels.items():
            kv_peak[name] = max(kv_peak[name], level.runner.cache.nbytes() / 2**20)
    elapsed = time.perf_counter() - start
    forward = timer.total_s - forward_before
    levels = sorted(name for name in engine.levels if name != "target")
    result = {"batch": cfg.max_num_seqs, "path": engine.precision.name, "chain": cfg.chain or "plain",
              "has_draft": "draft" in drafts, "levels": levels,
              "peak_kv_mib": {name: round(mib, 1) for name, mib in kv_peak.items()}, "decode_steps": steps,
              "built_rss_mib": round(built_mb, 1), "peak_rss_mib": round(rss.read_mb(), 1),
              "step_ms": round(elapsed / max(steps, 1) * 1e3, 2),
              "non_forward_share": round(1 - forward / elapsed, 4) if elapsed else None}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    from cli.missing_data import exit_on_missing_data
    with exit_on_missing_data():
        main(parse_dataclass(MemoryArgs))
