# mypy: disable-error-code="no-untyped-def,untyped-decorator"
"""Helpers shared by every emitted kernel (imported only by generated modules).

No annotations but ``tl.constexpr``: Triton reads parameter annotations as type hints."""

import triton
import triton.language as tl


@triton.jit
def store_cast(x, dtype: tl.constexpr):
    """fp32 -> ``dtype``; bf16 by explicit round-to-nearest-even, so the Triton interpreter (which
    truncates) and the GPU give the same bits as torch's CPU and CUDA kernels (finite values)."""
    if dtype == tl.bfloat16:
        bits = x.to(tl.int32, bitcast=True)
        rounded = bits + 0x7FFF + ((bits >> 16) & 1)
        return (rounded >> 16).to(tl.int16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(dtype)


@triton.jit
def sign(x):
    """torch.sign for finite x: -1, 0 or 1."""
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0))


def host_sign(x):
    """torch.sign of a host scalar (the host slot functions of an emitted kernel)."""
    return (x > 0) - (x < 0)
