"""The calibration's fitting sample: prompts per category, their token lengths, and the real
engine's steps on them (what `python -m env.calibrate` fits the simulator from)."""

from __future__ import annotations

import time

import numpy as np

from engine.decision import Decision
from engine.drafters import MODEL_FREE_DRAFTERS
from engine.sampling import SamplingParams
from engine.trackers import pair_key
from env.acceptance_counts import signal_key
from env.acceptance_model import AcceptanceModel
from env.prompt_sources import CATEGORIES, SPEC_BENCH_TASKS, Prompt, azure_code_prompt, azure_code_trace, load_prompts
from env.real_backend import encode_prompt
from env.sim_calibration import PromptLength
from env.sim_clock import rows_forwards
from env.step_time_fit import StepSample


def sample_prompts(num_prompts: int, rng: np.random.Generator) -> list[Prompt]:
    """`num_prompts` prompts spread evenly over the categories, in random order (Azure code
    prompts sized by random trace rows)."""
    banks = {task: list(load_prompts(f"spec_bench:{task}")) for task in SPEC_BENCH_TASKS}
    banks.update(humaneval=list(load_prompts("humaneval")), sharegpt=list(load_prompts("sharegpt")))
    for bank in banks.values():
        rng.shuffle(bank)
    trace = azure_code_trace()
    prompts: list[Prompt] = []
    for i in range(num_prompts):
        category = CATEGORIES[i % len(CATEGORIES)]
        if category == "azure_code":
            index = int(rng.integers(len(trace)))
            prompts.append(azure_code_prompt(index, trace[index].context_tokens, trace[index].generated_tokens))
        else:
            prompts.append(banks[category][i // len(CATEGORIES)])
    return [prompts[int(i)] for i in rng.permutation(len(prompts))]


def fit_prompt_lengths(engine) -> dict[str, PromptLength]:
    """tokens = template + chars / chars_per_token per category, over every prompt of the data."""
    banks = {task: load_prompts(f"spec_bench:{task}") for task in SPEC_BENCH_TASKS}
    banks.update(humaneval=load_prompts("humaneval"), sharegpt=load_prompts("sharegpt"))
    banks["azure_code"] = tuple(azure_code_prompt(i, 512, 1) for i in range(8))
    lengths = {}
    tokenizer = engine.tokenizer
    for category, bank in banks.items():
        chars = sum(len(p.text) for p in bank)
        raw = sum(len(tokenizer.encode(p.text, add_special_tokens=False)) for p in bank)
        template = 0.0
        chat = [p for p in bank if p.is_chat and len(p.text) < 1000][:20]
        if chat:
            template = float(np.mean([len(engine.encode_prompt([{"role": "user", "content": p.text}]))
                                      - len(engine.encode_prompt(p.text)) for p in chat]))
        lengths[category] = PromptLength(chars_per_token=chars / raw, template_tokens=max(template, 0.0))
    return lengths


def collect(engine, profile, prompts: list[Prompt], chain: tuple[str, ...], ks: list[int], max_new_tokens: int,
            max_prompt_tokens: int, acceptance: AcceptanceModel, steps: list[StepSample],
            rng: np.random.Generator, clock: str = "wall") -> None:
    """Run `prompts` to completion on `chain` (output lengths drawn in [max_new_tokens / 4,
    max_new_tokens] so the batch shrinks gradually); add every row's outcome to `acceptance`
    and every step to `steps`."""
    engine.forget_drafter_history()
    decisions = [Decision(chain, k) for k in ks]       # K cycles, one per step: acceptance is seen at every K
    room = engine.config.max_model_len - max_new_tokens - 1
    for prompt in prompts:
        ids = encode_prompt(engine, prompt, min(max_prompt_tokens, room), room)
        length = int(rng.integers(max(1, max_new_tokens // 4), max_new_tokens + 1))
        engine.add_request(ids, SamplingParams(max_tokens=length, ignore_eos=True), category=prompt.category)
    num_steps = 0
    while engine.has_unfinished:
        engine.admit()
        batch = list(engine.scheduler.running)
        decision = decisions[num_steps % len(decisions)]
        num_steps += 1
        num_tokens = [r.num_tokens for r in batch]
        cached = [{name: level.committed_length(r) for name, level in engine.levels.items()} for r in batch]
        ks_used = [engine.draft_length(r, decision) for r in batch]
        categories = [r.category for r in batch]
        signals = [engine.executor.signals(r) for r in batch]        # read before the step, as a router would
        started = time.process_time()
        engine.step(decision)
        cpu_s = time.process_time() - started
        record = engine.last_step
        if record.batch_size != len(batch):
            raise RuntimeError("the engine admitted requests between the snapshot and the step")
        forwards = rows_forwards(profile, num_tokens, cached, decision.chain, ks_used, record.results, engine.config)
        steps.append(StepSample(forwards, record.batch_size, cpu_s if clock == "cpu" else record.latency_s))
        for category, k, result, row_signals in zip(categories, ks_used, record.results, signals):
            for name, signal in row_signals.items():
                acceptance.observe_signal(name, category, signal)
            if k == 0:
                continue
            first = category
            if decision.chain[0] in MODEL_FREE_DRAFTERS:
                first = signal_key(category, row_signals.get(decision.chain[0]))
                acceptance.observe_proposal(decision.chain[0], first, k, result.num_proposed)
            for i, pair in enumerate(result.pairs):
                acceptance.observe_pair(pair_key(pair.drafter, pair.verifier), first if i == 0 else category,
                                        pair.num_proposed, pair.num_accepted)
                acceptance.observe_confidences(pair_key(pair.drafter, pair.verifier), pair.confidences,
                                               pair.num_proposed, pair.num_accepted)
