"""The run-time precondition of every R step: the gradients and state tensors it writes own
their bytes (`distinct_buffers`), checked once per step and cached while nothing moved."""

from __future__ import annotations

import operator
import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from gsr_rewrite.runtime import layout
from gsr_rewrite.runtime.guards import _PLAIN, _local

Tensor = torch.Tensor


# -- the run-time precondition -----------------------------------------------------------------
# The static analysis reasons about names; what it cannot see is how the user laid out memory.
# An R step writes scratch into gradients (and into state it proved dead), so it is exact only
# when, among the tensors one step touches, every param, gradient and state tensor (those in
# lists and dicts of state too) owns its bytes: no two of them overlap (two params sharing bytes
# would see a strip-mined run's chunks update them in another order), no param is listed twice,
# and no tensor among the groups' options (a tensor lr, 0-d: the analysis takes options for
# numbers) overlaps them. Options and state hold nothing but tensors and plain values (no object
# whose operators run user code mid-step), and no gradient or state tensor is one an in-place op
# raises on. Checked once per step; the verdict is
# cached while the spans of all those tensors are unchanged.

_FALLBACKS = [0]  # steps that took the original path because the precondition failed
_nbytes, _grad = operator.attrgetter("nbytes"), operator.attrgetter("grad")


def _extent(t: Tensor) -> int:
    """Bytes from the first element of a strided view to one past its last (non-contiguous)."""
    return (1 + sum((s - 1) * abs(d) for s, d in zip(t.shape, t.stride(), strict=True))
            ) * t.element_size()


def _spans(ts: list[Tensor]) -> list[tuple[Any, int, int]] | None:
    """(device, first byte, one past the last) of each non-empty tensor: a conservative interval
    (a strided view counts its whole extent). None when a tensor's memory cannot be located (a
    subclass without storage: DTensor, fake, meta)."""
    if set(map(type, ts)) <= _PLAIN:  # the common case, in mapped C calls (2,000 grads: 1 ms)
        try:
            lows = list(map(Tensor.data_ptr, ts))
        except (RuntimeError, NotImplementedError):
            return None
        return _plain_spans(ts, lows, map(_nbytes, ts), map(Tensor.is_contiguous, ts))
    out = []
    for t in ts:
        if not t.numel():
            continue
        own = getattr(t, "gsr_span", None)  # subclasses that know their storage (symbolic)
        if own is not None:
            out.append(own())
            continue
        t = _local(t)
        try:
            lo = t.data_ptr()
        except (RuntimeError, NotImplementedError):
            return None
        out.append((t.device, lo, lo + (t.nbytes if t.is_contiguous() else _extent(t))))
    return out


def _plain_spans(ts: list[Tensor], lows: Iterable[int], sizes: Iterable[int],
                 dense: Iterable[bool]) -> list[tuple[Any, int, int]]:
    """`_spans` of plain tensors whose addresses, byte counts and contiguity are known."""
    return [(t.device, lo, lo + (n if d else _extent(t)))
            for t, lo, n, d in zip(ts, lows, sizes, dense, strict=True) if n]


def _spans_disjoint(owned: list[tuple[Any, int, int]],
                    shared: list[tuple[Any, int, int]]) -> bool:
    """No `owned` span overlaps another span; `shared` spans (option tensors) may overlap each
    other."""
    by_storage: dict[Any, list[tuple[int, int, bool]]] = {}
    for spans, is_owned in ((owned, True), (shared, False)):
        for k, lo, hi in spans:
            by_storage.setdefault(k, []).append((lo, hi, is_owned))
    for marked in by_storage.values():
        marked.sort()
        end, owned_in_run = -1, False  # the run of mutually overlapping spans seen last
        for lo, hi, is_owned in marked:
            if lo >= end:
                end, owned_in_run = hi, is_owned
                continue
            if is_owned or owned_in_run:
                return False
            end = max(end, hi)
    return True


def _addresses_disjoint(every: list[Tensor], lows: tuple[int, ...], sizes: tuple[int, ...],
                        dense: tuple[bool, ...], shared: int) -> bool:
    """`_spans_disjoint` of plain tensors, the first `shared` of them options, in a few numpy
    ops on their addresses (10,000 tensors: ~0.5 ms; the same ops in torch took ~2, sorting the
    tuples in Python ~6). Addresses of all devices are compared as one space: with unified
    virtual addressing (CUDA's on every 64-bit platform) they never coincide across devices, and
    where they could, a false overlap only sends the step to the original."""
    lo = np.fromiter(lows, dtype=np.int64, count=len(lows))
    hi = lo + np.fromiter(sizes, dtype=np.int64, count=len(sizes))
    if not all(dense):
        for i in (i for i, d in enumerate(dense) if not d):  # a strided view: its whole extent
            hi[i] = lows[i] + _extent(every[i])
    owned = np.arange(len(lows)) >= shared
    keep = hi > lo  # empty tensors overlap nothing
    lo, hi, owned = lo[keep], hi[keep], owned[keep]
    if lo.size < 2:
        return True
    order = np.argsort(lo, kind="stable")
    lo, hi, owned = lo[order], hi[order], owned[order]
    # span i overlaps an earlier one (lower or equal start) iff it starts before their largest end
    reach = np.maximum.accumulate(hi)[:-1]
    owned_reach = np.maximum.accumulate(np.where(owned, hi, 0))[:-1]
    later = lo[1:]
    return not bool(((later < reach) & owned[1:]).any() or (later < owned_reach).any())


def distinct_buffers(opt: Any) -> bool:
    """The run-time precondition of an R step (see above); False also when a tensor's memory
    cannot be located. Per step three mapped C calls per tensor (address, size, contiguity; and
    shape and strides of a non-contiguous one: together they fix its span); the spans are
    computed and sorted again only when one of those changed since the last step."""
    return checked(opt, certify=False)[0]


def checked(opt: Any, certify: bool, scalar_state: tuple[str, ...] = ()
            ) -> tuple[bool, layout.Pending | None]:
    """`distinct_buffers`, and where it holds and `certify`, the step's layout certificate
    (layout.py), made at its first lookup; with `scalar_state`, those state entries hold
    numbers or 0-d tensors (checked with the verdict: a tensor put there changes the verdict's
    key, its address, size or number of dimensions)."""
    groups = opt.param_groups
    defaults = getattr(opt, "defaults", {})
    if not all(type(g) is dict for g in (*groups, defaults)):  # a subclass's [] may run code
        return _fallback(), None
    params = [p for group in groups for p in group["params"]]
    options = _option_tensors([*groups, defaults])
    if len(set(map(id, params))) != len(params) or options is None:
        return _fallback(), None
    grads = [g for g in map(_grad, params) if g is not None]
    state = _state_tensors(getattr(opt, "state", {}))
    if state is None:
        return _fallback(), None
    every = params + grads + state
    kinds = set(map(type, every))
    plain = kinds <= _PLAIN
    if not plain:
        if not all(map(_trusted, kinds)):
            return _fallback(), None
        every = [_local(t) for t in every]  # DTensors: their shards on this rank
    found = layout.record(opt, every, len(params)) if certify and plain else None
    if found.unsafe if found is not None else layout.unwritable(every[len(params):]):
        return _fallback(), None
    sizes: tuple[int, ...] = ()
    dense: tuple[bool, ...] = ()
    try:
        lows = tuple(map(Tensor.data_ptr, every))
        read = tuple((t.data_ptr(), t.nbytes, t.is_contiguous(), t.shape, t.stride())
                     for t in options)  # few: a tensor lr, tensor betas
        if found is not None:  # sizes, strides and dtypes: the record's (it holds, TensorGuards)
            key: Any = (len(params), lows, found, read)
        else:
            sizes, dense = tuple(map(_nbytes, every)), tuple(map(Tensor.is_contiguous, every))
            # dims: a host-scalar state tensor unsqueezed in place keeps its address and size
            dims = tuple(map(Tensor.dim, every)) if scalar_state else ()
            key = (len(params), lows, sizes, dense, dims, read, () if all(dense) else
                   tuple((t.shape, t.stride()) for t, d in zip(every, dense, strict=True)
                         if not d))
    except (RuntimeError, NotImplementedError):  # a subclass without storage: never cached
        key = None
    cached = _VERDICTS.get(opt)
    if key is not None and cached is not None and cached[0] == key:
        verdict = cached[1]
    else:
        if key is not None and plain:
            if found is not None:  # what TensorGuards re-checked fixes byte counts, contiguity
                sizes, dense = found.sizes, found.dense
            verdict = _addresses_disjoint(
                options + every, tuple(r[0] for r in read) + lows,
                tuple(r[1] for r in read) + sizes, tuple(r[2] for r in read) + dense,
                len(options))
        else:
            owned_spans, shared_spans = _spans(every), _spans(options)
            verdict = owned_spans is not None and shared_spans is not None and \
                _spans_disjoint(owned_spans, shared_spans)
        verdict = verdict and _scalars_hold(getattr(opt, "state", {}), scalar_state)
        _VERDICTS[opt] = (key, verdict)
    if not verdict:
        return _fallback(), None
    return True, (layout.Pending(found, every) if found is not None else None)


#: option and state values that hold no tensor and run no user code when a step computes with
#: them (a float subclass's `__truediv__` could re-alias gradients in the middle of a step); not
#: complex: a complex factor makes a float gradient's product complex, which no float buffer
#: the rewrite moved it into can hold
_SCALARS = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device})


def _scalars_hold(state: Any, keys: tuple[str, ...]) -> bool:
    """Each of `keys` in each param's state is a number, or a 0-d tensor (what the analysis
    took it for: arithmetic on it makes no parameter-sized tensor of another dtype)."""
    return not keys or all(
        _scalar(v) or _host_tensor(v)
        for per in state.values() if type(per) is dict
        for v in (per[k] for k in keys if k in per))


def _host_tensor(v: Any) -> bool:
    """A 0-d real tensor: combined with a tensor of dimensions it decides neither the result's
    shape nor, within one category (float with float), its dtype, as a number would not. A
    tensor of one element and one dimension does: `g * torch.tensor([0.1], dtype=float64)` is
    float64, which the float32 gradient the rewrite put it in would round."""
    return isinstance(v, Tensor) and v.dim() == 0 and not v.is_complex()


def _scalar(v: Any) -> bool:
    return type(v) in _SCALARS or (isinstance(v, np.generic) and type(v).__module__ == "numpy"
                                   and not isinstance(v, np.complexfloating))


def _tensors_in(v: Any, out: list[Tensor], depth: int = 0) -> bool:
    """Append the tensors in `v` (a tensor, a scalar, or lists, tuples and dicts of them, up to
    4 deep) to `out`; False when `v` holds anything else (an object the check cannot see into)."""
    if isinstance(v, Tensor):
        out.append(v)
        return True
    if _scalar(v):
        return True
    if depth >= 4 or type(v) not in (list, tuple, dict):
        return False
    return all(_tensors_in(x, out, depth + 1) for x in (v.values() if type(v) is dict else v))


def _option_tensors(groups: list[dict[str, Any]]) -> list[Tensor] | None:
    """The tensors among the groups' options (a tensor lr, tensor betas), each once; None when
    an option is neither a plain 0-d tensor nor a plain value (see `_SCALARS`; a tensor
    subclass's `__torch_function__` may run code too)."""
    out: list[Tensor] = []
    for group in groups:
        for key, v in group.items():
            if key != "params" and not _scalar(v) and not _tensors_in(v, out):
                return None
    if not set(map(type, out)) <= _PLAIN or not all(map(_host_tensor, out)):
        return None  # the analysis takes options for numbers: 0-d tensors only (a tensor lr)
    return list({id(t): t for t in out}.values())  # one lr tensor shared by every group


def _state_tensors(state: Any) -> list[Tensor] | None:
    """The tensors in the optimizer's state (every key's, a param's or not: `state["buf"]`),
    those in lists and dicts of it too; None when a value is neither (see `_tensors_in`), or a
    param's state is a dict subclass (its methods may run code)."""
    pers = list(state.values())
    if set(map(type, pers)) <= {dict}:
        values = [v for per in pers for v in per.values()]
    elif any(isinstance(per, dict) and type(per) is not dict for per in pers):
        return None
    else:
        values = [v for per in pers for v in (per.values() if type(per) is dict else (per,))]
    kinds = set(map(type, values))
    if kinds <= _PLAIN:  # the common case: tensors only
        return values
    if kinds <= _PLAIN | _SCALARS:  # and numbers (a float `rho_t`)
        return [v for v in values if type(v) in _PLAIN]
    out: list[Tensor] = []
    return out if all(_tensors_in(v, out) for v in values) else None


def _trusted(kind: type) -> bool:
    """A tensor subclass whose ops run no code of its own: one that overrides neither
    `__torch_function__` nor `__torch_dispatch__` (FSDP's FlatParameter), torch's DTensor, or
    the proof's symbolic tensors (`gsr_span`). Any other may do anything on every op."""
    if not issubclass(kind, Tensor):
        return False
    if getattr(kind, "gsr_span", None) is not None or (
            kind.__name__ == "DTensor" and kind.__module__.startswith("torch.distributed")):
        return True
    function = getattr(kind.__torch_function__, "__func__", kind.__torch_function__)
    return function in _DEFAULT_TORCH_FUNCTIONS and \
        kind.__torch_dispatch__ is torch._C._disabled_torch_dispatch_impl


_DEFAULT_TORCH_FUNCTIONS = (torch._C._disabled_torch_function_impl,
                            getattr(Tensor.__torch_function__, "__func__", None))


#: optimizer -> (spans, verdict) of its last step; spans hold no tensors
_VERDICTS: weakref.WeakKeyDictionary[Any, tuple[Any, bool]] = weakref.WeakKeyDictionary()


def _fallback() -> bool:
    _FALLBACKS[0] += 1
    return False
