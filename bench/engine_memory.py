"""Engine + draft on the default forward path at batch 16, alone in this process: peak RSS and
the share of a step that is not model forward. bench_engine runs it as a subprocess and reads
the JSON line it prints last. The prompts are Spec-Bench's, long ones included (summarization
and RAG, ~1000 tokens): the KV cache holds every row at the longest row's length.

    .venv/bin/python -m bench.engine_memory --num-threads 2
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import torch

from bench.bench_models import encode_chat
from bench.common import REPO_ROOT, PeakRSS, sample_prompts
from bench.engine_columns import ForwardTimer
from engine import Engine, EngineConfig, SamplingParams
from engine.dataclass_args import parse_dataclass
from engine.precision import PrecisionArgs


@dataclass
class MemoryArgs(PrecisionArgs):
    """Peak RSS and non-forward share of a batch-16 plain run (engine + draft)."""

    batch: int = field(default=16, metadata={"help": "requests running at once"})
    max_new_tokens: int = field(default=64, metadata={"help": "new tokens per request"})
    draft: str = field(default="checkpoints/draft", metadata={"help": "draft checkpoint (loaded when present)"})
    num_threads: int = field(default=2, metadata={"help": "torch threads"})


def main(cfg: MemoryArgs) -> dict:
    from engine.draft_model import is_draft_checkpoint, load_draft
    from engine.models import load_model
    torch.set_num_threads(cfg.num_threads)
    loaded = load_model("default")
    drafts = {}
    if is_draft_checkpoint(REPO_ROOT / cfg.draft):
        drafts["draft"] = load_draft(REPO_ROOT / cfg.draft, loaded)
    engine = Engine(loaded.model, loaded.tokenizer, EngineConfig(max_batch=cfg.batch, **cfg.precision_kwargs(release_model_weights=True)),
                    drafts=drafts)
    # VmHWM, not ru_maxrss: a child started from a large parent inherits the parent's size in
    # ru_maxrss at the fork, while VmHWM starts anew at exec
    rss = PeakRSS()
    built_mb = rss.read_mb()
    timer = ForwardTimer(engine.levels["target"].runner)
    prompts = sample_prompts(2, None, 1)[: cfg.batch]
    params = SamplingParams(max_tokens=cfg.max_new_tokens, ignore_eos=True)
    for prompt in prompts:
        engine.add_request(encode_chat(loaded.tokenizer, prompt.text), params)
    # the decode phase only: the first step admits and prefills all 16 (model time by nature)
    engine.step()
    start, forward_before, steps = time.perf_counter(), timer.total_s, 0
    while engine.has_unfinished:
        engine.step()
        steps += 1
    elapsed = time.perf_counter() - start
    forward = timer.total_s - forward_before
    result = {"batch": cfg.batch, "path": engine.precision.name, "has_draft": bool(drafts), "decode_steps": steps,
              "built_rss_mib": round(built_mb, 1), "peak_rss_mib": round(rss.read_mb(), 1),
              "step_ms": round(elapsed / max(steps, 1) * 1e3, 2),
              "non_forward_share": round(1 - forward / elapsed, 4) if elapsed else None}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(parse_dataclass(MemoryArgs))
