"""Eligibility guards: may this buffer hold that temporary, exactly? (`fits`, `fits_lists`).

Every rewritten statement runs only when its guard says the host buffer can hold the temporary
exactly (same shape, dtype and device as every tensor it combines with, dense, floating point,
not tracked by autograd, sharing no storage with the other operands); otherwise the original
statement runs. A guard never raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import Any

import torch

from gsr_rewrite.runtime import layout

Tensor = torch.Tensor


def _dense(t: Tensor) -> bool:
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)


def fits(hosts: Sequence[Any], like: Sequence[Any]) -> bool:
    """True when each host tensor can hold a temporary computed from the `like` tensors: same
    shape, dtype, device and strides, dense, not 0-d, no storage shared with them. DTensors
    (FSDP2) fit when all of them are laid out alike (same mesh and placements); their storage
    is their local shard's. With no host it checks that every `like` tensor matches the first
    (in-place chains on fresh temporaries: the chain must not change dtype or broadcast).
    Never while autograd would record the op (`_recorded`)."""
    if len(hosts) == 1 and len(like) <= 1:
        ids, t = layout.active(), like[0] if like else None
        if (ids is not None and not _recorded(like) and layout.pair_fits(ids, hosts[0], t)) or \
                _plain_pair_fits(hosts[0], t):
            GUARD_HITS[0] += 1
            return True
    elif not hosts and _plain_alike(like):
        GUARD_HITS[0] += 1
        return True
    return _fits_each(hosts, like)


def _plain_alike(like: Sequence[Any]) -> bool:
    """True only when `fits((), like)` holds, for plain tensors (the for-loop path asks this of
    in-place chains on fresh temporaries once per param: ~0.4 µs instead of ~2); False means
    "ask the full check"."""
    if not like or any(type(t) not in _PLAIN for t in like):
        return False
    ref = like[0]
    dtype, shape, device = ref.dtype, ref.shape, ref.device
    return ref.layout is _STRIDED and dtype.is_floating_point and not _recorded(like) and \
        all(t.dtype is dtype and t.layout is _STRIDED and t.shape == shape and t.device == device
            for t in like[1:])


def _fits_each(hosts: Sequence[Any], like: Sequence[Any]) -> bool:
    """`fits`, tensor by tensor (what its fast path must agree with)."""
    if (not hosts and not like) or _recorded(like):
        return False
    ref = (*hosts, *like)[0]
    if not isinstance(ref, Tensor):
        return False
    shape, dtype, device = ref.shape, ref.dtype, ref.device
    if not dtype.is_floating_point or ref.layout != torch.strided:
        return False
    layout = _distribution(ref)
    scalars = {id(t) for t in like if _host_scalar(t)} if hosts else set()
    for t in (*hosts, *like):
        if id(t) in scalars:
            continue
        if not isinstance(t, Tensor) or t.shape != shape or t.dtype != dtype or \
                t.device != device or t.layout != torch.strided or _distribution(t) != layout:
            return False
    for h in hosts:
        # a 0-d host: an operand the analysis takes for a number may be a 0-d tensor (a tensor
        # lr) of another dtype, and with only 0-d operands it decides the result's dtype
        if h.requires_grad or not _dense(h) or h.dim() == 0:
            return False
        storage = _storage(h)
        if storage is _UNLOCATED:
            return False
        for t in like:
            if t is h:
                continue
            other = _storage(t)
            if other is _UNLOCATED or (storage is not None and other == storage):
                return False
            # the original's result takes its operands' memory layout; in the host it takes
            # the host's: a later reduction over it (`update.norm()`) would add in another order
            if id(t) not in scalars and not _same_layout(t, h):
                return False
    GUARD_HITS[0] += 1
    return True


def _host_scalar(t: Any) -> bool:
    """A plain 0-d real tensor (`torch.tensor(-lr)`, a norm) among the operands: it broadcasts
    as a number does and, beside a floating host, leaves the result's dtype the host's (a
    complex one would not). Its storage is still checked: a 0-d view into the host changes as
    an in-place op writes it."""
    return type(t) in _PLAIN and t.dim() == 0 and not t.is_complex()


def _recorded(like: Iterable[Any]) -> bool:
    """Autograd would record an op on `like` (grad mode on, one of them requires grad: a step
    without `no_grad`): its `out=` form raises there, and the original records a graph."""
    return torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad
                                           for t in like)


def _plain_pair_fits(h: Any, t: Any) -> bool:
    """True only when `fits((h,), (t,))` (`fits((h,), ())` for t None) holds, for the common case
    of plain, contiguous tensors (the for-loop path asks this once per param and statement:
    ~1.1 µs instead of ~3); False means "ask the full check". Two contiguous tensors of one
    shape have the same strides where strides matter (`_same_layout`)."""
    if type(h) not in _PLAIN or (t is not None and type(t) not in _PLAIN):
        return False
    try:
        if h.layout is not _STRIDED or not h.dtype.is_floating_point or h.requires_grad or \
                not h.ndim or not h.is_contiguous():
            return False
        if t is None:
            return h.untyped_storage().data_ptr() is not None  # located (else it raises)
        if t.requires_grad and torch.is_grad_enabled():
            return False
        return t.dtype is h.dtype and t.shape == h.shape and t.is_contiguous() and \
            t.layout is _STRIDED and t.device == h.device and \
            (t is h or h.untyped_storage().data_ptr() != t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # storage not located: the full check says no
        return False


def _same_layout(a: Tensor, b: Tensor) -> bool:
    """Equal strides where they matter: a dimension of size 1 may have any stride (a [1, 1, 128]
    class token's gradient comes as strides (8320, 128, 1), its state as (128, 128, 1))."""
    sa, sb = a.stride(), b.stride()
    return sa == sb or all(n == 1 or x == y for n, x, y in zip(a.shape, sa, sb, strict=True))


#: How often a guard let a rewritten statement run (translation validation checks it moved).
GUARD_HITS = [0]


_PLAIN = {Tensor, torch.nn.Parameter}  # plain tensors: no DTensor attributes to look up

#: `_storage` of a tensor whose memory cannot be located (fake, meta, unknown subclasses): it
#: may share memory with anything, so it never hosts a temporary nor sits beside one
_UNLOCATED = object()


def _local(t: Tensor) -> Tensor:
    """The tensor that holds `t`'s bytes on this rank: a DTensor's local shard, else `t`."""
    local = getattr(t, "_local_tensor", None)
    return local if isinstance(local, Tensor) else t


def _distribution(t: Tensor) -> Any:
    """How a DTensor is spread over ranks (mesh, placements); None for a plain tensor."""
    if type(t) in _PLAIN:  # the common case, without a failed attribute lookup per tensor
        return None
    spec = getattr(t, "_spec", None)
    return None if spec is None else (spec.mesh, spec.placements)


def _storage(t: Tensor) -> Any:
    """Identity of `t`'s storage (a DTensor's: its local shard's; the symbolic tensors': their
    element box); None for an empty tensor (they overlap nothing); `_UNLOCATED` when unknown."""
    if t.numel() == 0:
        return None
    span = None if type(t) in _PLAIN else getattr(t, "gsr_span", None)  # plain: no lookups
    if span is not None:
        return span()[0]
    local = t if type(t) in _PLAIN else _local(t)
    try:
        return local.device, int(local.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):
        return _UNLOCATED


def fits_lists(hosts: Sequence[Sequence[Any]], like: Sequence[Sequence[Any]],
               wide: bool = False) -> bool:
    """`fits` for every index of parallel tensor lists (foreach code); with `wide`, float32 and
    float64 only (emit.FOREACH_INPLACE_ROUNDS_DIFFERENTLY)."""
    if not hosts and not like:
        return False
    n = len((*hosts, *like)[0])
    if any(len(x) != n for x in (*hosts, *like)):
        return False
    if wide and any(not isinstance(t, Tensor) or t.dtype not in (torch.float32, torch.float64)
                    for x in (*hosts, *like) for t in x):
        return False
    ids = layout.active()
    if n and ids is not None and not _recorded(t for x in like for t in x) and \
            layout.lists_fit(ids, hosts, like):
        GUARD_HITS[0] += n
        return True
    if n and _plain_lists_fit(hosts, like):
        GUARD_HITS[0] += n
        return True
    return all(fits([h[i] for h in hosts], [x[i] for x in like]) for i in range(n))


_dtype, _device, _layout = (attrgetter(a) for a in ("dtype", "device", "layout"))
_requires_grad = attrgetter("requires_grad")
_STRIDED = torch.strided


def _storage_addresses(ts: Sequence[Tensor]) -> list[int]:
    return list(map(torch.UntypedStorage.data_ptr, map(Tensor.untyped_storage, ts)))


def _plain_lists_fit(hosts: Sequence[Sequence[Any]], like: Sequence[Sequence[Any]]) -> bool:
    """True only when `fits` holds at every index of lists of plain, contiguous tensors, found
    column by column in mapped C calls (2,000 params: ~1 ms instead of ~8); False means "ask
    `fits` index by index" (subclasses, channels-last, strides that differ only in size-1
    dimensions, empty tensors sharing an address, ...)."""
    columns = [*hosts, *like]
    every = [t for x in columns for t in x]
    if not set(map(type, every)) <= _PLAIN or _recorded(t for x in like for t in x):
        return False
    first = columns[0]
    sizes, dtypes = list(map(Tensor.size, first)), list(map(_dtype, first))
    devices = set(map(_device, first))
    if not all(d.is_floating_point for d in set(dtypes)) or len(devices) != 1:
        return False
    for x in columns[1:]:
        if list(map(Tensor.size, x)) != sizes or list(map(_dtype, x)) != dtypes or \
                set(map(_device, x)) != devices:
            return False
    try:
        if set(map(_layout, every)) != {_STRIDED} or not all(map(Tensor.is_contiguous, every)):
            return False
        for h in hosts:
            if any(map(_requires_grad, h)) or not all(map(Tensor.dim, h)):
                return False
            mine = _storage_addresses(h)
            for x in like:
                if x is not h and any(a == b and t is not own for a, b, t, own in
                                      zip(mine, _storage_addresses(x), x, h, strict=True)):
                    return False
    except (RuntimeError, NotImplementedError):  # storage not located: `fits` says no
        return False
    return True


#: values whose truth cannot change while a step runs (a name bound to one keeps its truth)
_IMMUTABLE_FLAGS = (bool, int, float, str, type(None))


def truthy(x: object) -> bool:
    """`x` is an immutable plain value (bool, number, string, None) and true: an option that
    a placement made only when it holds may rely on (transform/options.py)."""
    return type(x) in _IMMUTABLE_FLAGS and bool(x)


def falsy(x: object) -> bool:
    """`x` is an immutable plain value and false (see `truthy`)."""
    return type(x) in _IMMUTABLE_FLAGS and not x
