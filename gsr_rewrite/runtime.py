"""Run-time support imported by generated R-variants: eligibility guards and foreach placement.

Every rewritten statement runs only when `fits` / `fits_lists` say that the host buffer can hold
the temporary exactly (same shape, dtype and device as every tensor it combines with, dense,
floating point, not tracked by autograd, sharing no storage with the other operands); otherwise
the original statement runs. A guard never raises.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

Tensor = torch.Tensor

#: Set GSR_DEBUG_POISON=1 (or call `set_debug_poison(True)`) to fill every gradient an R-variant
#: used as scratch with NaN after `step()`, so code reading gradients after the step fails loudly.
_DEBUG_POISON = os.environ.get("GSR_DEBUG_POISON", "") not in ("", "0")


def set_debug_poison(enabled: bool) -> None:
    global _DEBUG_POISON
    _DEBUG_POISON = enabled


def poison_grads(param_groups: Sequence[dict[str, Any]]) -> None:
    """Debug mode only: after step, gradients are undefined; make that visible."""
    if not _DEBUG_POISON:
        return
    for group in param_groups:
        for p in group["params"]:
            if p.grad is not None and p.grad.is_floating_point():
                p.grad.fill_(float("nan"))


def _dense(t: Tensor) -> bool:
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)


def fits(hosts: Sequence[Any], like: Sequence[Any]) -> bool:
    """True when each host tensor can hold a temporary computed from the `like` tensors."""
    if not hosts and not like:
        return False
    ref = (*hosts, *like)[0]
    if not isinstance(ref, Tensor):
        return False
    shape, dtype, device = ref.shape, ref.dtype, ref.device
    if not dtype.is_floating_point or ref.layout != torch.strided:
        return False
    for t in (*hosts, *like):
        if not isinstance(t, Tensor) or t.shape != shape or t.dtype != dtype or \
                t.device != device or t.layout != torch.strided:
            return False
    for h in hosts:
        if h.requires_grad or not _dense(h):
            return False
        storage = _storage(h)
        for t in like:
            if t is not h and storage is not None and _storage(t) == storage:
                return False
    GUARD_HITS[0] += 1
    return True


#: How often a guard let a rewritten statement run (translation validation checks it moved).
GUARD_HITS = [0]


def _storage(t: Tensor) -> int | None:
    """Storage address, or None for tensor subclasses without one (symbolic, fake, meta) and for
    empty tensors (every empty tensor reports address 0; they overlap nothing)."""
    if t.numel() == 0:
        return None
    try:
        return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):
        return None


def fits_lists(hosts: Sequence[Sequence[Any]], like: Sequence[Sequence[Any]]) -> bool:
    """`fits` for every index of parallel tensor lists (foreach code)."""
    if not hosts and not like:
        return False
    n = len((*hosts, *like)[0])
    if any(len(x) != n for x in (*hosts, *like)):
        return False
    return all(fits([h[i] for h in hosts], [x[i] for x in like]) for i in range(n))


# A guard with no host checks that every `like` tensor matches the first one (in-place chains on
# fresh temporaries: the chain must not change dtype or broadcast).


def foreach_inplace(op_: Callable[..., Any], target: list[Tensor], *args: Any,
                    **kwargs: Any) -> list[Tensor]:
    """`torch._foreach_X(target, ...)` computed in target's own (dead) buffers."""
    op_(target, *args, **kwargs)
    return target


def foreach_into(host: list[Tensor], op_: Callable[..., Any] | None, first: list[Tensor],
                 *args: Any, **kwargs: Any) -> list[Tensor]:
    """`torch._foreach_X(first, ...)` computed in `host`: copy, then the in-place op.

    `torch.ops.aten._foreach_X.out` would allocate a full temporary list (measured on CUDA and
    CPU, tests/test_memory.py), so the copy + in-place pair is the allocation-free form.
    """
    if host is not first:
        torch._foreach_copy_(host, first)
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


def r_step(original: type, **bound: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorates an R-variant's `step`: differentiable groups take the original class's step
    (autograd must see every intermediate), and the debug switch poisons reused gradients.

    `bound`: ATTR=F for each `self.ATTR(...)` the rewrite analysed as a call of F (what
    `__init__` binds it to); while `self.ATTR` is anything else, the original step runs."""

    def decorate(step: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(step)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if any(g.get("differentiable", False) for g in self.param_groups) or \
                    any(getattr(self, a, None) is not f for a, f in bound.items()):
                return original.step(self, *args, **kwargs)  # type: ignore[attr-defined]
            out = step(self, *args, **kwargs)
            poison_grads(self.param_groups)
            return out

        return wrapper

    return decorate
