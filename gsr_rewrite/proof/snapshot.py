"""Snapshots: everything an optimizer keeps, as plain data `compare.compare_values` compares.

A snapshot lists the params, then each param's state, then each group's options, then what the
optimizer keeps on ``self`` besides torch's bookkeeping (`is_bookkeeping`). Params are labelled
by position and shape, and a param met again (a state key, an inner optimizer's param) stands for
its label; values that are not plain data compare as `_Opaque`.
"""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer


def _label(i: int, p: torch.Tensor) -> str:
    layout = "" if p.is_contiguous() else ", non-contiguous"
    return f"param[{i}] (shape {tuple(p.shape)}{layout})"


@functools.cache
def _torch_bookkeeping() -> frozenset[str]:
    """Attributes that are torch's, not the optimizer's results: whatever a bare SGD keeps on self
    (param_groups, state, defaults, six hook dicts, the profiler name, a warned flag), plus what
    torch.optim.lr_scheduler patches onto an optimizer."""
    bare = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    return frozenset(vars(bare)) | {"_opt_called", "_patched_step", "_step_count"}


def is_bookkeeping(name: str) -> bool:
    """torch's bookkeeping, warned-once flags, and gsr-rewrite's own caches (``_gsr_plans`` and
    ``_gsr_replays`` of the Triton runtime, on R-variants only)."""
    return name in _torch_bookkeeping() or name.startswith(("_warned", "_gsr"))


#: Nesting followed inside what an optimizer keeps on self; deeper values compare as `_Opaque`.
_MAX_DEPTH = 8
_SCALARS = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device)


class _Opaque:
    """A value that is not plain data. Equal when ``==`` says so; where ``==`` cannot tell two
    runs' objects apart meaningfully (identity-based, or raising) equal when of the same type.
    Bound methods count as identity-based: theirs compares ``__self__``, one optimizer per run."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Opaque) or type(self.value) is not type(other.value):
            return False
        try:
            if bool(self.value == other.value):
                return True
        except Exception:  # a tensor-valued or otherwise unusable ==
            return True
        eq: Any = type(self.value).__eq__
        return eq is object.__eq__ or callable(self.value)  # identity-based ==

    def __repr__(self) -> str:
        return f"<{type(self.value).__qualname__}>"


@dataclass
class _SnapshotContext:
    root: Optimizer
    labels: dict[int, str]  # id(param) -> label; a param found elsewhere stands for its label
    open: set[int]  # ids of the containers being converted (a cycle compares as `_Opaque`)


def _plain(value: Any, ctx: _SnapshotContext, depth: int) -> Any:
    """``value`` as data `compare_values` compares: tensors, scalars, dicts, lists, tuples."""
    if isinstance(value, torch.Tensor):
        label = ctx.labels.get(id(value))  # a param: its values are compared under its label
        return value if label is None else f"<{label}>"
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, torch.Generator):
        return value.get_state()
    if value is ctx.root:
        return "<self>"
    if depth > _MAX_DEPTH or id(value) in ctx.open:
        return _Opaque(value)
    ctx.open.add(id(value))
    try:
        if isinstance(value, dict):
            return {_plain_key(k, i, ctx): _plain(v, ctx, depth + 1)
                    for i, (k, v) in enumerate(value.items())}
        if isinstance(value, list | collections.deque):
            return [_plain(v, ctx, depth + 1) for v in value]
        if isinstance(value, tuple):
            return tuple(_plain(v, ctx, depth + 1) for v in value)
        if isinstance(value, Optimizer):
            return _describe(value, ctx, depth + 1, prefix="inner ")
        return _Opaque(value)
    finally:
        ctx.open.discard(id(value))


def _plain_key(key: Any, position: int, ctx: _SnapshotContext) -> Any:
    """A dict key comparable across runs: a param's label, else the key itself when it is a
    scalar, else its type and position."""
    if isinstance(key, torch.Tensor):
        return ctx.labels.get(id(key), f"<tensor key #{position}>")
    if isinstance(key, _SCALARS):
        return key
    return f"<{type(key).__qualname__} key #{position}>"


def _describe(opt: Optimizer, ctx: _SnapshotContext, depth: int, prefix: str = "",
              attributes: bool = True) -> dict[str, Any]:
    """Params, then each param's state, then group options, then what the optimizer keeps on
    self besides torch's bookkeeping. An inner optimizer labels params it shares with the outer
    one like the outer one does; its own with ``prefix``."""
    params = [p for g in opt.param_groups for p in g["params"]]
    labels = [ctx.labels.setdefault(id(p), prefix + _label(i, p)) for i, p in enumerate(params)]
    snap: dict[str, Any] = {label: p.data for label, p in zip(labels, params, strict=True)}
    for label, p in zip(labels, params, strict=True):
        # .get: optimizer.state is a defaultdict; indexing would create entries.
        snap[f"state of {label}"] = _plain(opt.state.get(p, {}), ctx, depth)
    listed = set(map(id, params))
    for i, (key, value) in enumerate(opt.state.items()):
        if id(key) not in listed:  # state under any other key
            snap[f"state[{_plain_key(key, i, ctx)}]"] = _plain(value, ctx, depth)
    for k, g in enumerate(opt.param_groups):
        options = {key: v for key, v in g.items() if key != "params"}
        snap[f"param_groups[{k}]"] = _plain(options, ctx, depth)
    for name, value in vars(opt).items() if attributes else ():
        if not is_bookkeeping(name):
            snap[f"self.{name}"] = _plain(value, ctx, depth)
    return snap


def snapshot(opt: Optimizer, attributes: bool = True) -> dict[str, Any]:
    """Everything compared, in order: params, each param's state, group options, and (unless
    ``attributes`` is False) the other attributes on self."""
    ctx = _SnapshotContext(root=opt, labels={}, open=set())
    return _describe(opt, ctx, depth=0, attributes=attributes)
