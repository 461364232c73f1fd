"""Computing a temporary in its host buffer: foreach ops into dead lists, scalar-first ops with
`out=`, in the exact evaluation order of the original expression."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from gsr_rewrite.runtime.guards import _local

Tensor = torch.Tensor


def foreach_inplace(op_: Callable[..., Any], target: list[Tensor], *args: Any,
                    **kwargs: Any) -> list[Tensor]:
    """`torch._foreach_X(target, ...)` computed in target's own (dead) buffers."""
    op_(target, *args, **kwargs)
    return target


def foreach_into(host: list[Tensor], op_: Callable[..., Any] | None, first: list[Tensor],
                 *args: Any, **kwargs: Any) -> list[Tensor]:
    """`torch._foreach_X(first, ...)` computed in `host`: copy, then the in-place op.

    `torch.ops.aten._foreach_X.out` would allocate a full temporary list (measured on CUDA and
    CPU, tests/proof/test_memory.py), so the copy + in-place pair is the allocation-free form.
    """
    if host is not first:  # DTensor has no _foreach_copy_; alike laid out (fits_lists), their
        torch._foreach_copy_([_local(h) for h in host], [_local(f) for f in first])  # shards
    if op_ is not None:
        op_(host, *args, **kwargs)
    return host


def foreach_out(op: Callable[..., Any], host: list[Tensor], *operands: Any,
                **kwargs: Any) -> list[Tensor]:
    """`torch._foreach_X(*operands)` computed per tensor with `torch.X(..., out=host[i])`.

    Used when the host is not the first operand (the in-place foreach form cannot express it);
    exact aliasing of an operand and `out` is safe for per-element ops.
    """
    for i, h in enumerate(host):
        op(*[x[i] if isinstance(x, (list, tuple)) else x for x in operands], out=h, **kwargs)
    return host


def scalar_first(op: str, s: Any, t: Tensor, out: Tensor) -> Tensor:
    """`s OP t` into `out`, computed exactly as the original expression: for a Python number
    torch evaluates `t.__rOP__(s)` (`s / t` as `t.reciprocal() * s`, `s - t` as `(-t) + s`,
    `s * t` as `t * s`); a tensor `s` (a 0-d tensor lr) is the first operand of the op, and in
    bf16 a 0-d first operand rounds differently from a 0-d second one (measured)."""
    fn = getattr(torch, op)
    if isinstance(s, Tensor):
        if torch.result_type(s, t) != out.dtype or s.dim() > t.dim():
            return fn(s, t)  # type: ignore[no-any-return]  # out would round or not fit
        return fn(s, t, out=out)  # type: ignore[no-any-return]
    if op == "div":
        return torch.reciprocal(t, out=out).mul_(s)
    if op == "sub":
        return torch.neg(t, out=out).add_(s)
    if op in ("add", "mul"):
        return fn(t, s, out=out)  # type: ignore[no-any-return]
    return fn(s, t, out=out)  # type: ignore[no-any-return]


def scalar_first_(op: str, s: Any, t: Tensor) -> Tensor:
    """`s OP t` computed in `t`'s own buffer (t dies here; it is evaluated once)."""
    return scalar_first(op, s, t, t)
