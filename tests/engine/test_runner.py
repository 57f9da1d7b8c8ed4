"""ModelRunner computes the same logits as transformers, for ragged batches fed in chunks."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from engine.runner import ModelRunner
from tests.tiny_models import build_tiny_llama
from tests.engine.builders import single_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

TOLERANCE = 1e-4
VOCAB = 45


def build_tiny_qwen2() -> Qwen2ForCausalLM:
    """Qwen2 adds q/k/v biases, which the runner fuses separately."""
    torch.manual_seed(3)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.2, tie_word_embeddings=False)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:     # random biases, so that a dropped bias shows
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.2)
    return model


MODELS = {
    "llama-gqa": lambda: build_tiny_llama(seed=0, num_heads=4, num_kv_heads=2),
    "llama-mha": lambda: build_tiny_llama(seed=1, num_heads=4, num_kv_heads=4),
    "llama-mqa-3-layers": lambda: build_tiny_llama(seed=2, num_layers=3, num_heads=4, num_kv_heads=1),
    "qwen2-bias": build_tiny_qwen2,
}


def reference_logits(model, tokens: list[int]) -> torch.Tensor:
    """transformers' logits for one unpadded row: [len, vocab]."""
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].float()


@pytest.mark.parametrize("name", list(MODELS))
def test_ragged_chunked_batches_match_transformers(name):
    model = MODELS[name]()
    rng = random.Random(sum(map(ord, name)))
    lengths = [1, 7, 19, 33, 50]
    rows = [[rng.randrange(VOCAB) for _ in range(n)] for n in lengths]
    references = [reference_logits(model, row) for row in rows]
    runner = ModelRunner(model, max_len=128)
    slots = [runner.cache.allocate_slot() for _ in range(8)]
    row_slots = [slots[6], slots[1], slots[4], slots[0], slots[3]]     # not contiguous, not in order
    fed = [0] * len(rows)
    num_forwards = 0
    while any(f < len(r) for f, r in zip(fed, rows)):
        active = [i for i, r in enumerate(rows) if fed[i] < len(r)]
        subset = [i for i in active if rng.random() < 0.8] or active[:1]   # rows join and sit out
        chunks, num_logits = [], []
        for i in subset:
            size = min(rng.choice([1, 1, 2, 3, 5, 8]), len(rows[i]) - fed[i])
            chunks.append(rows[i][fed[i]: fed[i] + size])
            num_logits.append(rng.randint(1, size))
        logits = runner.forward([row_slots[i] for i in subset], chunks, num_logits)  # [b, max(num_logits), V]
        num_forwards += 1
        for j, i in enumerate(subset):
            end = fed[i] + len(chunks[j])
            want = references[i][end - num_logits[j]: end]
            got = logits[j, : num_logits[j]]
            assert (got - want).abs().max() < TOLERANCE, f"{name}: row {i} positions up to {end}"
            fed[i] = end
            assert runner.cache.lengths[row_slots[i]] == end
    assert num_forwards > 5


@pytest.mark.parametrize("name", ["llama-gqa", "llama-mha"])
def test_contiguous_prefill_of_whole_batch_matches(name):
    """The contiguous-slots path (a slice of the cache instead of a gather)."""
    model = MODELS[name]()
    rows = [[(5 * i + 3 * j) % VOCAB for j in range(n)] for i, n in enumerate([4, 11, 2])]
    runner = ModelRunner(model, max_len=64)
    slots = [runner.cache.allocate_slot() for _ in rows]
    assert slots == list(range(slots[0], slots[0] + len(rows)))
    logits = runner.forward(slots, rows, [len(r) for r in rows])
    for j, row in enumerate(rows):
        assert (logits[j, : len(row)] - reference_logits(model, row)).abs().max() < TOLERANCE


def test_cache_growth_keeps_contents():
    """Capacity doubles when a row outgrows it (and slots double when all are taken); what was
    cached before must survive the copy."""
    model = MODELS["llama-gqa"]()
    runner = ModelRunner(model, max_len=300)
    runner.cache = type(runner.cache)(runner.num_layers, runner.num_kv_heads, runner.head_dim, 300,
                                      initial_slots=1, initial_len=8)
    row = [(7 * j + 1) % VOCAB for j in range(40)]
    first = runner.cache.allocate_slot()
    runner.forward([first], [row[:6]], [1])
    second = runner.cache.allocate_slot()            # grows the slot count
    runner.forward([second], [row[:3]], [1])
    logits = runner.forward([first, second], [row[6:40], row[3:30]], [34, 27])   # grows the capacity
    reference = reference_logits(model, row)
    assert runner.cache.capacity >= 40 and runner.cache.num_slots >= 2
    assert (logits[0, :34] - reference[6:40]).abs().max() < TOLERANCE
    assert (logits[1, :27] - reference[3:30]).abs().max() < TOLERANCE


def test_unsupported_architecture_is_refused():
    model = MODELS["llama-gqa"]()
    model.config.model_type = "gpt2"
    with pytest.raises(ValueError, match="unsupported architecture 'gpt2'"):
        ModelRunner(model)


def test_feeding_past_the_context_is_refused():
    runner = ModelRunner(MODELS["llama-gqa"](), max_len=16)
    slot = runner.cache.allocate_slot()
    runner.forward([slot], [list(range(10))], [1])
    with pytest.raises(ValueError, match="exceeds the context length 16"):
        runner.forward([slot], [list(range(7))], [1])


@pytest.mark.parametrize("name", ["llama-gqa", "qwen2-bias"])
def test_building_a_runner_keeps_the_model_s_own_outputs(name):
    """The runner re-lays the model's weights input-major in place: same values, so the
    transformers model (HF generate in the benchmarks, the tied embedding) computes what it did."""
    model = MODELS[name]()
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.inference_mode():
        before = model(ids).logits
        ModelRunner(model, max_len=64)
        after = model(ids).logits
    assert model.lm_head.weight.stride(0) == 1            # re-laid, not copied
    assert torch.allclose(before, after, atol=1e-6)


def storage_of(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


@pytest.mark.parametrize("name", ["llama-gqa", "qwen2-bias"])
def test_the_model_and_its_runners_hold_one_copy_of_each_weight(name, tmp_path):
    """Every matrix lives once: the runners use the model's own parameters (re-laid in place;
    a fused q/k/v or gate/up group of the dense kernel multiplies them part by part), and the
    model can still be saved and reloaded."""
    model = MODELS[name]()
    runner = ModelRunner(model, max_len=64)
    second = ModelRunner(model, max_len=64)

    def weights_of(products):
        return [m.weight for p in products for m in getattr(p, "parts", [p])]

    for layer, ours, theirs in zip(model.model.layers, runner.layers, second.layers):
        attn, mlp = layer.self_attn, layer.mlp
        params = [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight,
                  mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight]
        assert [storage_of(p) for p in params] == [storage_of(w) for w in weights_of(ours.products)] \
            == [storage_of(w) for w in weights_of(theirs.products)]
        assert len({storage_of(p) for p in params}) == len(params)
        if attn.q_proj.bias is not None:
            assert storage_of(ours.qkv.parts[1].bias) == storage_of(attn.k_proj.bias)
    slots = [runner.cache.allocate_slot(), second.cache.allocate_slot()]
    row = [3, 1, 4, 1, 5, 9, 2, 6]
    logits = runner.forward(slots[:1], [row], [8])
    assert torch.equal(logits, second.forward(slots[1:], [row], [8]))
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    assert (reference_logits(reloaded, row) - logits[0]).abs().max() < TOLERANCE


def test_a_tied_embedding_is_the_head_s_storage():
    """SmolLM2 ties its embedding and LM head: the runner must not keep the pre-re-lay copy."""
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True, initializer_range=0.2)
    torch.manual_seed(4)
    model = LlamaForCausalLM(config).eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    row = [7, 3, 9, 12, 40, 2]
    reference = reference_logits(model, row)
    runner = ModelRunner(model, max_len=64)
    assert storage_of(runner.embed) == storage_of(runner.lm_head.weight) == storage_of(model.lm_head.weight)
    slot = runner.cache.allocate_slot()
    assert (runner.forward([slot], [row], [len(row)])[0] - reference).abs().max() < TOLERANCE


def test_drafts_over_one_reduced_vocabulary_share_one_head_product():
    """The distilled draft and the EAGLE head score the same subset of the target's head: one
    product (36 MB for SmolLM2), not one each; another subset gets its own."""
    from engine.draft_model import build_draft
    target = build_tiny_llama(seed=0, num_layers=2)
    subset = torch.arange(0, VOCAB, 2)
    first = ModelRunner(build_draft(target, [0], subset), max_len=64)
    second = ModelRunner(build_draft(target, [1], subset), max_len=64)
    other = ModelRunner(build_draft(target, [0], torch.arange(1, VOCAB, 2)), max_len=64)
    assert first.lm_head is second.lm_head and other.lm_head is not first.lm_head
    slot = second.cache.allocate_slot()
    logits = second.forward([slot], [[3, 5, 7]], [1])[0, -1]
    assert torch.isinf(logits[1::2]).all() and torch.isfinite(logits[::2]).all()
