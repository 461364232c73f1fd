"""Run-time support imported by generated R-variants: eligibility guards and foreach placement.

Every rewritten statement runs only when `fits` / `fits_lists` say that the host buffer can hold
the temporary exactly (same shape, dtype and device as every tensor it combines with, dense,
floating point, not tracked by autograd, sharing no storage with the other operands); otherwise
the original statement runs. A guard never raises.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import weakref
from collections.abc import Callable, Iterator, Sequence
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
    """True when each host tensor can hold a temporary computed from the `like` tensors: same
    shape, dtype, device and strides, dense, not 0-d, no storage shared with them. DTensors
    (FSDP2) fit when all of them are laid out alike (same mesh and placements); their storage
    is their local shard's."""
    if not hosts and not like:
        return False
    ref = (*hosts, *like)[0]
    if not isinstance(ref, Tensor):
        return False
    shape, dtype, device = ref.shape, ref.dtype, ref.device
    if not dtype.is_floating_point or ref.layout != torch.strided:
        return False
    layout = _distribution(ref)
    for t in (*hosts, *like):
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
            if not _same_layout(t, h):
                return False
    GUARD_HITS[0] += 1
    return True


def _same_layout(a: Tensor, b: Tensor) -> bool:
    """Equal strides where they matter: a dimension of size 1 may have any stride (a [1, 1, 128]
    class token's gradient comes as strides (8320, 128, 1), its state as (128, 128, 1))."""
    return all(n == 1 or x == y for n, x, y in zip(a.shape, a.stride(), b.stride(), strict=True))


#: How often a guard let a rewritten statement run (translation validation checks it moved).
GUARD_HITS = [0]


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
    span = getattr(t, "gsr_span", None)
    if span is not None:
        return span()[0]
    local = _local(t)
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


def r_step(original: type, **bound: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorates an R-variant's `step`. The original class's step runs instead when

    - a group has `differentiable=True` (autograd must see every intermediate);
    - `step` is given a closure or any other argument (a closure may replace the gradients
      after the run-time precondition was checked);
    - the run-time precondition `distinct_buffers` does not hold (duplicated params, gradients
      that overlap each other, a param or a state tensor);
    - ATTR=F in `bound` (each `self.ATTR(...)` the rewrite analysed as a call of F, what
      `__init__` binds it to) while `self.ATTR` is anything else.

    - the step is being traced by `torch.compile` (Inductor plans the original's temporaries
      itself; the guards' storage checks would break the graph).

    The debug switch poisons reused gradients after the R step."""

    def decorate(step: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(step)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if torch.compiler.is_compiling() or \
                    any(a is not None for a in (*args, *kwargs.values())) or \
                    any(g.get("differentiable", False) for g in self.param_groups) or \
                    any(getattr(self, a, None) is not f for a, f in bound.items()) or \
                    not distinct_buffers(self):
                # the R step already runs inside torch's step hooks: not twice
                return unhooked(original.step)(self, *args, **kwargs)  # type: ignore[attr-defined]
            out = step(self, *args, **kwargs)
            poison_grads(self.param_groups)
            return out

        return wrapper

    return decorate


def unhooked(step: Any) -> Any:
    """`step` without the hooks `Optimizer.__init__` wraps a class's step in once an object of
    it exists (marked `hooked`): what the class really defines or inherits."""
    return getattr(step, "__wrapped__", step) if getattr(step, "hooked", False) else step


# -- the run-time precondition -----------------------------------------------------------------
# The static analysis reasons about names; what it cannot see is how the user laid out memory.
# An R step writes scratch into gradients (and into state it proved dead), so it is exact only
# when, among the tensors one step touches, every gradient and every state tensor owns its bytes:
# no two of them overlap, none overlaps a param, and no param is listed twice. Checked once per
# step; the verdict is cached while the spans of all those tensors are unchanged.

_PLAIN = {Tensor, torch.nn.Parameter}
_FALLBACKS = [0]  # steps that took the original path because the precondition failed
_nbytes = operator.attrgetter("nbytes")


def _extent(t: Tensor) -> int:
    """Bytes from the first element of a strided view to one past its last (non-contiguous)."""
    return (1 + sum((s - 1) * abs(d) for s, d in zip(t.shape, t.stride(), strict=True))
            ) * t.element_size()


def _spans(ts: list[Tensor]) -> list[tuple[Any, int, int]] | None:
    """(device, first byte, one past the last) of each non-empty tensor: a conservative interval
    (a strided view counts its whole extent). None when a tensor's memory cannot be located (a
    subclass without storage: DTensor, fake, meta)."""
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


def _spans_disjoint(owned: list[tuple[Any, int, int]],
                    shared: list[tuple[Any, int, int]]) -> bool:
    """No `owned` span overlaps another span; `shared` spans (params) may overlap each other."""
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


def distinct_buffers(opt: Any) -> bool:
    """The run-time precondition of an R step (see above); False also when a tensor's memory
    cannot be located. Per step three mapped C calls per tensor (address, size, contiguity; and
    shape and strides of a non-contiguous one: together they fix its span); the spans are
    computed and sorted again only when one of those changed since the last step."""
    params = [p for group in opt.param_groups for p in group["params"]]
    if len(set(map(id, params))) != len(params):
        return _fallback()
    state = getattr(opt, "state", {})
    owned = [p.grad for p in params if p.grad is not None]
    owned += [v for p in params for v in state.get(p, {}).values() if isinstance(v, Tensor)]
    every = params + owned
    if not set(map(type, every)) <= _PLAIN:
        every = [_local(t) for t in every]  # DTensors: their shards on this rank
    try:
        dense = tuple(map(Tensor.is_contiguous, every))
        key: Any = (len(params), tuple(map(Tensor.data_ptr, every)), tuple(map(_nbytes, every)),
                    dense, () if all(dense) else tuple((t.shape, t.stride()) for t, d in
                                                       zip(every, dense, strict=True) if not d))
    except (RuntimeError, NotImplementedError):  # a subclass without storage: never cached
        key = None
    cached = _VERDICTS.get(opt)
    if key is not None and cached is not None and cached[0] == key:
        verdict = cached[1]
    else:
        owned_spans, shared_spans = _spans(owned), _spans(params)
        verdict = owned_spans is not None and shared_spans is not None and \
            _spans_disjoint(owned_spans, shared_spans)
        _VERDICTS[opt] = (key, verdict)
    return verdict or _fallback()


#: optimizer -> (spans, verdict) of its last step; spans hold no tensors
_VERDICTS: weakref.WeakKeyDictionary[Any, tuple[Any, bool]] = weakref.WeakKeyDictionary()


def _fallback() -> bool:
    _FALLBACKS[0] += 1
    return False


#: Elements per strip are a multiple of this: a multiple of every CPU vector loop's step, so each
#: element takes the same code path (vector body or scalar tail) in a strip as in its whole tensor.
STRIP_ALIGN = 64
#: A strip-mined run with k temporaries alive at once is emitted with 64 * k strips
STRIP_FRACTION = 64
#: GSR_STRIPS=N overrides the number of strips of every strip-mined run (1: whole tensors, the
#: original's speed and memory); unset, each run uses the number the rewriter chose.
_STRIPS_OVERRIDE = os.environ.get("GSR_STRIPS", "")
#: A strip-mined run is cut into no more strips than it needs to keep its temporaries under this
#: many bytes (GSR_STRIP_FLOOR_MB, default 16 MiB; 0: always the emitted count, 1/64 of the
#: tensors per temporary): a run over 2,000 tensors of 64x64 takes 4 strips instead of 128, one
#: over ViT-B/32's 88 M params 44, and a small run one (whole tensors, the original's speed).
_STRIP_FLOOR = [int(float(os.environ.get("GSR_STRIP_FLOOR_MB", "16")) * 2**20)]


@contextlib.contextmanager
def strip_floor(nbytes: int) -> Iterator[None]:
    """Run with another strip floor (memory measurements use 0: the strip structure itself)."""
    saved, _STRIP_FLOOR[0] = _STRIP_FLOOR[0], nbytes
    try:
        yield
    finally:
        _STRIP_FLOOR[0] = saved


def _budgeted(count: int, positions: list[list[Tensor]]) -> int:
    """`count` strips give each of the run's `count / 64` temporaries 1/64 of its tensors; fewer
    when the temporaries of all positions still fit under the floor."""
    floor = _STRIP_FLOOR[0]
    if floor <= 0:
        return count
    total = sum(g[0].numel() * g[0].element_size() for g in positions if g)
    return max(1, min(count, -(-count * total // (STRIP_FRACTION * floor))))


class At:
    """`at(xs, i)`: the strips of `xs[i]` (a run reads that item of a tensor list)."""

    def __init__(self, seq: Sequence[Any], index: Any) -> None:
        self.seq, self.index = seq, index

    def item(self) -> Any:
        return self.seq[self.index] if -len(self.seq) <= self.index < len(self.seq) else None


at = At


class StripItem:
    """Stands for `xs` inside a strip: `xs[i]` is the strip of item i; any other index, or an
    item that does not exist, raises as the original `xs[i]` would."""

    def __init__(self, seq: Sequence[Any], index: Any, piece: Any) -> None:
        self.seq, self.index, self.piece = seq, index, piece

    def __getitem__(self, j: Any) -> Any:
        self.seq[j]  # noqa: B018 - IndexError where the original raises it
        if j != self.index:
            raise RuntimeError("gsr-rewrite: a strip-mined run indexed an item it did not slice")
        return self.piece

    def __len__(self) -> int:
        return len(self.seq)


def strips(count: int, *values: Any) -> Iterator[tuple[Any, ...]]:
    """`values` (tensors, lists of tensors position by position, or `at(xs, i)`) cut into
    `count` strips.

    Each strip is a tuple like `values` whose tensors are views of the same contiguous element
    range of each tensor (aligned to STRIP_ALIGN); lists keep their length and order, so lists of
    scalars that go with them still match. Tensors that cannot be sliced alike (non-contiguous,
    different shapes, sparse, a mix of lists and single tensors) are yielded whole, once."""
    whole = [v.item() if isinstance(v, At) else v for v in values]
    positions = _strip_positions(whole) if count > 1 else None
    if _STRIPS_OVERRIDE and not _FINE_STRIPS[0]:
        count = int(_STRIPS_OVERRIDE)
    elif positions is not None and not _FINE_STRIPS[0]:
        count = _budgeted(count, positions)
    if count <= 1:
        positions = None
    if positions is None:
        yield tuple(StripItem(v.seq, v.index, w) if isinstance(v, At) else w
                    for v, w in zip(values, whole, strict=True))
        return
    align = 1 if _FINE_STRIPS[0] else STRIP_ALIGN
    sizes = []
    for group in positions:
        n = group[0].numel() if group else 0
        per = -(-n // count)
        sizes.append(max(align, -(-per // align) * align))
    pieces: dict[int, list[Tensor]] = {}  # id(tensor) -> its strips
    total = 1
    for group, size in zip(positions, sizes, strict=True):
        for t in group:
            if id(t) not in pieces:
                flat = t.view(-1)
                pieces[id(t)] = list(torch.split(flat, size)) if t.numel() else [flat]
                total = max(total, len(pieces[id(t)]))

    def piece(t: Any, k: int) -> Any:
        if not isinstance(t, Tensor):
            return t
        ts = pieces[id(t)]
        return ts[k] if k < len(ts) else ts[-1][ts[-1].numel():]

    def cut(v: Any, w: Any, k: int) -> Any:
        if isinstance(v, At):
            return StripItem(v.seq, v.index, piece(w, k))
        if isinstance(v, (list, tuple)):
            return type(v)(piece(t, k) for t in v)
        return piece(v, k)

    GUARD_HITS[0] += total > 1
    for k in range(total):
        yield tuple(cut(v, w, k) for v, w in zip(values, whole, strict=True))


def _strip_positions(values: Sequence[Any]) -> list[list[Tensor]] | None:
    """The tensors that must be cut alike, one group per position; None when they cannot be."""
    lists = [v for v in values if isinstance(v, (list, tuple)) and len(v)]  # empty: unused
    singles = [v for v in values if isinstance(v, Tensor)]
    if lists and singles:
        return None
    if lists:
        n = len(lists[0])
        if any(len(v) != n for v in lists):
            return None
        groups = [[v[i] for v in lists if v[i] is not None] for i in range(n)]
    else:
        groups = [singles]
    for g in groups:
        if not g:
            continue
        shape = g[0].shape
        for t in g:
            plain = type(t) is Tensor or isinstance(t, torch.nn.Parameter) or _FINE_STRIPS[0]
            # a 0-d tensor stays whole: its 1-element strip would be 1-d, and type promotion
            # with a 0-d operand (a tensor lr) depends on that (bf16 results round otherwise)
            if not isinstance(t, Tensor) or not plain or t.layout != torch.strided or \
                    t.shape != shape or not t.is_contiguous() or t.dim() == 0:
                return None
    return groups


_FINE_STRIPS = [False]


@contextlib.contextmanager
def fine_strips() -> Iterator[None]:
    """Translation validation: strips of one element, on symbolic tensors too, so that the proof
    covers the slicing itself (its tensors have a few elements, fewer than STRIP_ALIGN)."""
    _FINE_STRIPS[0] = True
    try:
        yield
    finally:
        _FINE_STRIPS[0] = False
