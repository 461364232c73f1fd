"""Equivalence of a Triton R-variant with its eager original, within a stated tolerance.

The kernels are not bitwise equal to the eager step: they compute each element in fp32 registers
in one expression (sympy's association order, ``x * (1/c)`` where eager divides by ``c``, host
scalars rounded once to fp32) and round to the storage dtype once, where eager rounds after every
op.  ``TOLERANCE`` bounds the difference after ``steps`` steps; both the original and the
Triton variant run on the same data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

#: dtype -> (rtol, atol) for params and state after 7 steps; |a - b| <= atol + rtol * |b|
TOLERANCE = {
    # a few fp32 ulps per step (reassociation, reciprocal-multiply, fp32 host scalars): the worst
    # seen on the shipped optimizers was 9.5e-7 absolute on O(1) values after 7 steps
    torch.float32: (1e-5, 1e-6),
    # eager rounds every intermediate to bf16 (2**-8 relative), the kernel only the result: the
    # two drift apart by a few bf16 ulps per step
    torch.bfloat16: (4e-2, 1e-2),
}
SIZES = (0, 1, 7, 33, 1000)  # plus one tensor larger than a chunk (see ``sizes``)
INTERPRETER_CHUNK, INTERPRETER_BLOCK = 256, 64  # on the CPU: 4 chunks for 1000 elements


def sizes(chunk: int) -> tuple[int, ...]:
    return (*SIZES, chunk + 5)


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class TritonCheck:
    config: dict[str, Any]
    dtype: torch.dtype
    worst: float  # max |a - b| / (atol + rtol |b|): <= 1 passes
    launches: int  # kernel launches seen (0 means the kernel path never ran)
    where: str  # tensor of the worst difference

    @property
    def passed(self) -> bool:
        return self.worst <= 1.0 and self.launches > 0


def _trajectory(cls: type, config: dict[str, Any], dtype: torch.dtype, shapes: tuple[int, ...],
                steps: int, dev: str) -> list[tuple[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n, generator=gen).to(dev, dtype)) for n in shapes]
    opt = cls(params, **config)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(dev, dtype)
        opt.step()
    out = [(f"param[{i}]", p.detach()) for i, p in enumerate(params)]
    for i, p in enumerate(params):
        out += [(f"state[{i}][{k!r}]", v) for k, v in opt.state[p].items()
                if isinstance(v, torch.Tensor)]
    return out


def check_triton(original: type, triton_cls: type, config: dict[str, Any],
                 dtype: torch.dtype = torch.float32, steps: int = 7) -> TritonCheck:
    """Run both for ``steps`` steps on tensors of every size in ``sizes``; compare everything."""
    from gsr_rewrite import triton_runtime

    if device() == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("no GPU: set TRITON_INTERPRET=1 before importing triton")
    saved = triton_runtime.CHUNK, triton_runtime.BLOCK
    if device() == "cpu":  # the interpreter runs blocks as numpy arrays: small ones, many chunks
        triton_runtime.CHUNK, triton_runtime.BLOCK = INTERPRETER_CHUNK, INTERPRETER_BLOCK
    try:
        shapes = sizes(triton_runtime.CHUNK)
        before = triton_runtime.COUNTS["launches"]
        ref = _trajectory(original, config, dtype, shapes, steps, device())
        got = _trajectory(triton_cls, config, dtype, shapes, steps, device())
    finally:
        triton_runtime.CHUNK, triton_runtime.BLOCK = saved
    rtol, atol = TOLERANCE[dtype]
    worst, where = 0.0, ""
    for (name, a), (_, b) in zip(got, ref, strict=True):
        if a.numel() == 0:
            continue
        ratio = ((a.float() - b.float()).abs() / (atol + rtol * b.float().abs())).max().item()
        if not ratio <= worst:  # NaN counts as a failure
            worst, where = (float("inf") if ratio != ratio else ratio), name
    return TritonCheck(config, dtype, worst, triton_runtime.COUNTS["launches"] - before, where)
