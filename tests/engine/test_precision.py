"""Forward paths: dtype, kernel and weight format resolve as documented, every path matches
transformers in its own dtype, quantized targets stay lossless, and released weights still serve."""

from __future__ import annotations

import copy

import pytest
import torch

from engine import Decision, EngineConfig, SamplingParams
from engine.linear_kernels import prepacked_available
from engine.precision import resolve_precision
from engine.runner import ModelRunner
from tests.tiny_models import build_tiny_llama
from tests.engine.builders import make_dummy_engine, single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")
HAS_ONEDNN = prepacked_available(torch.float32, torch.device("cpu"))
needs_onednn = pytest.mark.skipif(not HAS_ONEDNN, reason="this torch build has no oneDNN")
ROW = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
PATHS = [("float32", "dense", 1e-4), ("float32", "prepacked", 1e-4), ("bfloat16", "dense", 0.1),
         ("bfloat16", "prepacked", 0.1)]


def fresh_target():
    return build_tiny_llama(seed=5, init_std=0.2)


@needs_onednn
def test_auto_is_the_exact_fp32_path_with_prepacked_kernels_on_cpu():
    precision = resolve_precision(device="cpu")
    assert (precision.dtype, precision.kernel, precision.weights) == (torch.float32, "prepacked", "dense")
    assert precision.name == "float32-prepacked"
    assert resolve_precision("bfloat16", "dense", "int8", "cpu").name == "bfloat16-dense-int8"


@pytest.mark.parametrize("kwargs,message", [
    (dict(dtype="float16"), "dtype must be one of auto, float32, bfloat16"),
    (dict(kernel="compiled"), "kernel must be one of auto, dense, prepacked"),
    (dict(weights="int2"), "weights must be one of dense, int8, int4"),
    (dict(device="tpu"), "device must be one of auto, cpu, cuda"),
])
def test_bad_precision_choices_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EngineConfig(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_device_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_precision(device="cuda")


@pytest.mark.parametrize("dtype,kernel,tolerance", PATHS, ids=[f"{d}-{k}" for d, k, _ in PATHS])
def test_every_path_matches_transformers_in_its_dtype(dtype, kernel, tolerance):
    if kernel == "prepacked" and not prepacked_available(getattr(torch, dtype), torch.device("cpu")):
        with pytest.raises(ValueError, match="prepacked kernel needs a CPU torch build with oneDNN"):
            resolve_precision(dtype, kernel, device="cpu")            # refused by name, not a crash later
        return
    model = fresh_target().to(getattr(torch, dtype))
    with torch.no_grad():
        reference = model(torch.tensor([ROW])).logits[0].float()
    runner = ModelRunner(model, 64, kernel=kernel)
    assert runner.cache.keys[0].dtype == getattr(torch, dtype)      # the KV cache holds the model dtype
    slot = runner.cache.allocate_slot()
    logits = runner.forward([slot], [ROW[:6]], [6])[0]
    logits = torch.cat([logits, runner.forward([slot], [ROW[6:]], [4])[0]])   # a decode-like second feed
    assert logits.dtype == torch.float32
    assert (logits - reference).abs().max() < tolerance * reference.abs().max().clamp(min=1)


@needs_onednn
@pytest.mark.parametrize("weights,tolerance", [("int8", 0.05), ("int4", 0.5)])
def test_a_quantized_target_is_close_to_dense_and_speculation_on_it_stays_lossless(weights, tolerance):
    """int4 of random tiny weights is coarse (16 levels per group of 32); the point is that
    speculation verifies against the quantized model exactly."""
    dense = fresh_target()
    with torch.no_grad():
        reference = dense(torch.tensor([ROW])).logits[0]
    quantized = copy.deepcopy(dense)
    dtype = "bfloat16" if weights == "int4" else "float32"
    plain = make_dummy_engine(quantized, None, dtype=dtype, weights=weights)
    runner = plain.levels["target"].runner
    slot = runner.cache.allocate_slot()
    logits = runner.forward([slot], [ROW], [len(ROW)])[0]
    runner.cache.free_slot(slot)
    assert (logits - reference).abs().max() < tolerance * reference.abs().max()
    params = SamplingParams(max_tokens=24, ignore_eos=True)
    prompt = [5, 6, 7, 5, 6, 7, 5, 6]
    expected = plain.generate([prompt], params)[0].output_token_ids
    plain.router.decision = Decision(("ngram", "target"), 4)
    assert plain.generate([prompt], params)[0].output_token_ids == expected


@needs_onednn
def test_released_weights_still_serve_every_runner_over_the_model():
    model = fresh_target()
    first = make_dummy_engine(model, None, release_model_weights=True)
    assert all(p.numel() == 0 for layer in model.model.layers for p in layer.mlp.parameters())
    params = SamplingParams(max_tokens=16, ignore_eos=True)
    expected = first.generate([ROW], params)[0].output_token_ids
    second = make_dummy_engine(model, None, release_model_weights=True)       # shares the prepacked products
    assert second.generate([ROW], params)[0].output_token_ids == expected
    dense = ModelRunner(model, 64, kernel="dense")                             # restored bit for bit
    with torch.no_grad():
        reference = fresh_target()(torch.tensor([ROW])).logits[0]
    slot = dense.cache.allocate_slot()
    assert (dense.forward([slot], [ROW], [len(ROW)])[0] - reference).abs().max() < 1e-4


def test_a_model_kept_by_default_can_still_be_copied_and_used():
    model = fresh_target()
    make_dummy_engine(model, None)
    copied = copy.deepcopy(model)
    with torch.no_grad():
        assert torch.equal(copied(torch.tensor([ROW])).logits, model(torch.tensor([ROW])).logits)
