"""The private torch ops engine/linear_kernels.py calls for `--weights int8` / `int4` still exist
and still compute what the kernels assume.

They are not public API, so pyproject pins torch to the release they were tested on (2.13.x);
when a newer torch renames or drops one, this test names the op and the version.
"""

from __future__ import annotations

import pytest
import torch

from engine.linear_kernels import Int4Linear, Int8Linear

PRIVATE_QUANTIZED_OPS = (
    "_weight_int8pack_mm",                 # Int8Linear
    "_convert_weight_to_int4pack_for_cpu",  # Int4Linear, at load
    "_weight_int4pack_mm_for_cpu",         # Int4Linear, every product
)


@pytest.mark.parametrize("name", PRIVATE_QUANTIZED_OPS)
def test_the_private_quantized_op_exists(name):
    assert hasattr(torch, name), (
        f"torch.{name} is missing in torch {torch.__version__}: engine/linear_kernels.py needs it for "
        f"--weights int8/int4; pin torch to 2.13.x (pyproject) or port the kernel")


@pytest.mark.parametrize("kernel, tolerance", [(Int8Linear, 0.02), (Int4Linear, 0.15)], ids=["int8", "int4"])
def test_the_quantized_product_is_close_to_the_dense_one(kernel, tolerance):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(40, 64, generator=generator)          # [out, in]; 40 is not a multiple of 16
    x = torch.randn(3, 64, generator=generator)               # [rows, in]
    expected = x @ weight.T                                    # [rows, out]
    got = kernel(weight)(x)
    assert got.shape == expected.shape
    error = ((got - expected).norm() / expected.norm()).item()
    assert error < tolerance, (f"{kernel.__name__} differs from the dense product by {error:.3f} (relative) "
                               f"in torch {torch.__version__}: the private op's contract changed")
