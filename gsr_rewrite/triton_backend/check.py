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
    from gsr_rewrite.runtime import triton_launch

    if device() == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("no GPU: set TRITON_INTERPRET=1 before importing triton")
    saved = triton_launch.CHUNK, triton_launch.BLOCK
    if device() == "cpu":  # the interpreter runs blocks as numpy arrays: small ones, many chunks
        triton_launch.CHUNK, triton_launch.BLOCK = INTERPRETER_CHUNK, INTERPRETER_BLOCK
    try:
        shapes = sizes(triton_launch.CHUNK)
        before = triton_launch.COUNTS["launches"]
        ref = _trajectory(original, config, dtype, shapes, steps, device())
        got = _trajectory(triton_cls, config, dtype, shapes, steps, device())
    finally:
        triton_launch.CHUNK, triton_launch.BLOCK = saved
    rtol, atol = TOLERANCE[dtype]
    worst, where = 0.0, ""
    for (name, a), (_, b) in zip(got, ref, strict=True):
        if a.numel() == 0:
            continue
        ratio = ((a.float() - b.float()).abs() / (atol + rtol * b.float().abs())).max().item()
        if not ratio <= worst:  # NaN counts as a failure
            worst, where = (float("inf") if ratio != ratio else ratio), name
    return TritonCheck(config, dtype, worst, triton_launch.COUNTS["launches"] - before, where)


@dataclass
class AotReport:
    """One kernel compiled ahead of time for an H100 (sm_90a) on any machine, no GPU needed."""

    kernel: str
    registers: int
    spill_bytes: int  # spill stores + spill loads; > 0 made kernels ~10x slower on H100
    vector_loads: int  # 128-bit global loads (ld.global.v4) in the PTX

    @property
    def ok(self) -> bool:
        return self.spill_bytes == 0 and self.vector_loads > 0


def compile_for_h100(kernel: Any, roles: tuple[str, ...], dtypes: tuple[torch.dtype, ...],
                     reductions: int) -> AotReport:
    """Compile one emitted driver with the runtime's launch constants and read ``ptxas -v``.

    Needs a real ``triton.jit`` function: run without TRITON_INTERPRET."""
    import re
    import subprocess
    import tempfile

    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource

    from gsr_rewrite.runtime import triton_launch

    to_tl = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}
    const: dict[str, Any] = {
        "W": len(roles) + 3, "CH": triton_launch.CHUNK, "BL": triton_launch.BLOCK,
        "ALIGNED": True, "NP": max(reductions, 1),
        **{f"T_{triton_launch.ident(r)}": to_tl[d] for r, d in zip(roles, dtypes, strict=True)}}
    signature = {"table": "*i64", "chunks": "*i32", "slots": "*fp32", "partials": "*fp32",
                 **dict.fromkeys(const, "constexpr")}
    names = kernel.arg_names
    src = ASTSource(fn=kernel, signature=signature,
                    constexprs={(names.index(k),): v for k, v in const.items()})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": triton_launch.NUM_WARPS})
    ptx = compiled.asm["ptx"]
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/kernel.ptx"
        with open(path, "w") as f:
            f.write(ptx)
        info = subprocess.run([get_ptxas(90).path, "-arch=sm_90a", "-v", path, "-o",
                               f"{tmp}/kernel.cubin"], capture_output=True, text=True,
                              check=True).stderr
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", info))
    registers = int(re.search(r"Used (\d+) registers", info).group(1))  # type: ignore[union-attr]
    vector_loads = len(re.findall(r"ld\.global(?:\.\w+)*\.v4", ptx))
    return AotReport(kernel.__name__, registers, spills, vector_loads)
