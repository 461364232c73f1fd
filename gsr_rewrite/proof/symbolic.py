"""Per-element symbolic execution: `SymTensor`, a tensor whose elements are sympy expressions.

The *real* ``step()`` runs on :class:`SymTensor`, a ``torch.Tensor`` wrapper subclass whose storage
is a numpy object array of sympy expressions.  ``__torch_dispatch__`` sees every aten op after
decomposition (``torch.sqrt(v, out=g)``, ``x.add_()``, ``torch._foreach_*``, torch.optim internals):

* each op first runs on ``meta`` tensors of the same size/stride/offset: output shapes, dtypes and
  strides come out exactly as in torch, and shape errors are raised as torch would;
* views (``func.is_view``: detach, view, slice, ...) share the storage array of their base at the
  meta run's offset/strides, so writes through any alias (``p.data``, ``out=`` into ``p.grad``,
  two Python names) are seen by all of them;
* per-element ops map to sympy (``elementwise.POINTWISE``); in-place forms write into ``self``,
  ``out=`` forms into ``out``; ``_foreach_*`` ops run as one per-tensor op per list index;
* other ops (norm, sum, matmul, unknown) become uninterpreted ``sympy.Function`` s named after the
  op, applied to the output position and *all* input elements; random ops add a call counter.

Scalars stay concrete: each float entering a tensor op becomes the simplest rational (or square
root of one: host-side ``sqrt(1 - b2**t)``) within 8 ulps of an O(1) operand and 1e-6 relative
(float32 ulps for float32-representable values), so tensor arithmetic is exact real arithmetic and
host-side rounding (``1 - b1 / b2``) is abstracted away.  This checks real-number semantics (the
contract's "tolerance" class), not bitwise identity.

Limits: data-dependent control flow (``.item()`` on a symbolic value) raises
:class:`SymbolicExecutionError`, as do in-place metadata ops (``t_``, ``resize_``).  Comparing two
runs is `translation`'s work; the Triton backend's kernel trace sets `SCALAR_LOOKUP` and
`SCALAR_ITEM` here while it runs.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import numpy as np
import sympy
import torch
from sympy.logic.boolalg import BooleanAtom
from torch.utils._pytree import tree_flatten, tree_map

from gsr_rewrite.proof.elementwise import POINTWISE, obj, op_values, vec

#: set by kernel_trace while it runs: a host scalar's value -> the expression it was computed from
SCALAR_LOOKUP: Callable[[float], Any] | None = None
#: set by kernel_trace while it runs: ``.item()`` of an expression over tagged host scalars only
#: (a 0-d step tensor) -> a tagged Python number; None when the expression reads tensor elements
SCALAR_ITEM: Callable[[Any, bool], Any] | None = None


class SymbolicExecutionError(RuntimeError):
    """The step cannot run symbolically (data-dependent control flow, unsupported op, its time
    budget spent)."""


#: `time.perf_counter()` past which symbolic execution stops (`time_budget`; None: no limit)
_DEADLINE: list[float | None] = [None]


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Symbolic execution inside stops with SymbolicExecutionError once `seconds` have passed
    (expressions can swell step after step: timm's Lamb took over 3 minutes)."""
    saved, _DEADLINE[0] = _DEADLINE[0], time.perf_counter() + seconds
    try:
        yield
    finally:
        _DEADLINE[0] = saved


def _simple(exact: Fraction, tol: float, ks: range) -> Fraction | None:
    for k in ks:  # simplest decimal-ish rational first: 0.9 -> 9/10
        f = exact.limit_denominator(10**k)
        if f != 0 and abs(f - exact) <= tol:
            return f
    return None


def const(x: Any, dtype: torch.dtype | None = None) -> Any:
    """A concrete scalar as an exact sympy number (see module docstring)."""
    if isinstance(x, sympy.Basic):
        return x
    if SCALAR_LOOKUP is not None and isinstance(x, (int, float)) and not isinstance(x, bool):
        hit = SCALAR_LOOKUP(x)
        if hit is not None:
            return hit
    if isinstance(x, bool):
        return sympy.true if dtype == torch.bool and x else sympy.Integer(int(x))
    if isinstance(x, int):
        return sympy.Integer(x)
    if not isinstance(x, float) or not math.isfinite(x):
        return sympy.sympify(x) if isinstance(x, float) else sympy.Symbol(repr(x))
    if dtype is None and float(np.float32(x)) == x:
        dtype = torch.float32  # most likely a float32 tensor's .item()
    exact = Fraction(x)
    eps = torch.finfo(dtype).eps if dtype is not None and dtype.is_floating_point else 2.0**-52
    tol = min(8 * eps * max(abs(x), 1.0), 1e-6 * abs(x))
    f = _simple(exact, tol, range(1, 7))
    if f is None and x > 0:  # sqrt(1 - b2**t) computed on the host
        sq = _simple(exact**2, 3 * tol * x, range(1, 7))
        if sq is not None:
            return sympy.sqrt(sympy.Rational(sq.numerator, sq.denominator))
    f = f or _simple(exact, tol, range(7, 13)) or exact
    return sympy.Rational(f.numerator, f.denominator)


_ALIAS = {"_unsafe_view", "_reshape_alias", "lift_fresh"}
_META_INPLACE = {"resize_", "as_strided_", "set_", "t_", "transpose_", "squeeze_", "unsqueeze_"}


def _index(t: SymTensor) -> np.ndarray:
    """Storage position of every element of ``t`` (shape of ``t``)."""
    base = np.arange(len(t._box), dtype=np.int64)[t.storage_offset() :]
    return np.lib.stride_tricks.as_strided(base, tuple(t.shape), [s * 8 for s in t.stride()])


class SymTensor(torch.Tensor):
    """A CPU-looking tensor whose storage elements are sympy expressions."""

    _box: np.ndarray
    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]

    @staticmethod
    def __new__(cls, box: np.ndarray, meta: torch.Tensor) -> SymTensor:
        r = torch.Tensor._make_wrapper_subclass(
            cls,
            meta.shape,
            strides=meta.stride(),
            storage_offset=meta.storage_offset(),
            dtype=meta.dtype,
            device=torch.device("cpu"),
            requires_grad=False,
        )
        r._box = box
        return r

    @staticmethod
    def fresh(meta: torch.Tensor, values: Any) -> SymTensor:
        size = 1 + sum((n - 1) * s for n, s in zip(meta.shape, meta.stride(), strict=True))
        t = SymTensor(np.empty(size if meta.numel() else 0, dtype=object), meta)
        t.write(values)
        return t

    @staticmethod
    def of(exprs: list[Any], dtype: torch.dtype = torch.float32) -> SymTensor:
        return SymTensor.fresh(torch.empty(len(exprs), dtype=dtype, device="meta"), vec(exprs))

    def exprs(self) -> np.ndarray:
        return obj(self._box[_index(self)])

    def write(self, values: Any) -> None:
        self._box[_index(self)] = np.broadcast_to(obj(values), tuple(self.shape))

    def gsr_span(self) -> tuple[Any, int, int]:
        """(storage, first, one past the last element) for runtime.distinct_buffers: views of
        one tensor share its `_box`."""
        extent = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride(), strict=True))
        start = int(self.storage_offset())
        return (("sym", id(self._box)), start, start + int(extent))

    def item(self) -> Any:
        """As aten's ``_local_scalar_dense``, but in Python: a tagged number keeps its tag (the
        C++ path would convert it to a plain float)."""
        return _scalar_out("item", self)

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        return f"SymTensor({self.exprs().tolist()})"

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:  # type: ignore[override]
        return _dispatch(func, tuple(args), dict(kwargs or {}))


def _to_meta(x: Any) -> Any:
    if isinstance(x, SymTensor):
        base = torch.empty(len(x._box), dtype=x.dtype, device="meta")
        return base.as_strided(x.shape, x.stride(), x.storage_offset())
    return x.to("meta") if isinstance(x, torch.Tensor) else x


def arg(x: Any) -> Any:
    """Tensor -> object array of expressions; Python scalar -> sympy number; else unchanged."""
    if isinstance(x, SymTensor):
        return x.exprs()
    if isinstance(x, torch.Tensor):
        vals = [const(v, x.dtype) for v in x.detach().reshape(-1).tolist()]
        return vec(vals, tuple(x.shape))
    return const(x) if isinstance(x, (bool, int, float)) else x


def _store(dst: Any, vals: Any) -> None:
    if isinstance(dst, SymTensor):
        return dst.write(vals)
    flat = np.broadcast_to(obj(vals), tuple(dst.shape)).ravel().tolist()
    if not all(isinstance(v, sympy.Number) for v in flat):
        raise SymbolicExecutionError("symbolic value written into a plain (concrete) tensor")
    dst.copy_(torch.tensor([float(v) for v in flat], dtype=dst.dtype).reshape(dst.shape))


def _split(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Positional args, keyword args (``out`` removed) and written args, per the op schema."""
    pos, kw, written = list(args), dict(kwargs), []
    for i, a in enumerate(func._schema.arguments):
        if a.alias_info is not None and a.alias_info.is_write and (a.name in kw or i < len(args)):
            written.append(kw[a.name] if a.name in kw else args[i])
    kw.pop("out", None)
    return pos, kw, written


def _scalar_out(func: Any, t: SymTensor) -> Any:
    v = t.exprs().ravel()[0] if t.numel() == 1 else None
    if isinstance(v, (sympy.Number, BooleanAtom)):
        if t.dtype == torch.bool or isinstance(v, BooleanAtom):
            return bool(v)
        return float(v) if t.dtype.is_floating_point else int(v)
    if SCALAR_ITEM is not None and v is not None:
        hit = SCALAR_ITEM(v, t.dtype.is_floating_point)
        if hit is not None:
            return hit
    raise SymbolicExecutionError(f"{func} on symbolic {v}: data-dependent control flow")


def _dispatch(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if _DEADLINE[0] is not None and time.perf_counter() > _DEADLINE[0]:
        raise SymbolicExecutionError("symbolic execution ran past its time budget "
                                     "(GSR_PROOF_BUDGET_S)")
    name, overload = func._schema.name.split("::")[-1], func._overloadname
    if name in ("_local_scalar_dense", "is_nonzero"):
        return _scalar_out(func, args[0])
    if name in _META_INPLACE or name == "equal":
        raise SymbolicExecutionError(f"unsupported op {func} under symbolic execution")
    try:
        meta = func(*tree_map(_to_meta, args), **tree_map(_to_meta, kwargs))
    except NotImplementedError as e:
        raise SymbolicExecutionError(f"unsupported op {func}: no meta kernel ({e})") from e
    if name == "detach_":
        return args[0]
    if func.is_view or name in _ALIAS:
        if not isinstance(args[0], SymTensor):
            raise SymbolicExecutionError(f"view {func} of a plain tensor")
        box = args[0]._box
        return tree_map(lambda m: SymTensor(box, m) if isinstance(m, torch.Tensor) else m, meta)
    pos, kw, written = _split(func, args, kwargs)
    if name.startswith("_foreach_"):
        return _foreach(name[len("_foreach_") :], overload, pos, kw, written, meta)
    dsts = [t for w in written for t in (w if isinstance(w, (list, tuple)) else [w])]
    metas = [_to_meta(t) for t in dsts] or [
        m for m in tree_flatten(meta)[0] if isinstance(m, torch.Tensor)
    ]
    if not metas:
        return meta
    label = f"{name.rstrip('_')}.{overload}"
    vals = op_values(label, tree_map(arg, pos), tree_map(arg, kw), metas)
    for d, v in zip(dsts, vals, strict=False):
        _store(d, v)
    if dsts:
        return dsts[0] if len(func._schema.returns) <= 1 else tuple(dsts)
    it = iter(vals)
    return tree_map(
        lambda m: SymTensor.fresh(m, next(it)) if isinstance(m, torch.Tensor) else m, meta
    )


def _foreach(
    base: str, overload: str, pos: list[Any], kw: dict[str, Any], written: list[Any], meta: Any
) -> Any:
    """Run ``_foreach_<base>`` as one per-tensor op per list index."""
    if overload == "Tensor" and base.rstrip("_") in ("addcmul", "addcdiv"):
        pos[3] = pos[3].reshape(-1).tolist()  # one scalar per list entry
    n = next(len(v) for v in pos if isinstance(v, (list, tuple)))
    label = base.rstrip("_") if base.rstrip("_") in POINTWISE else f"_foreach_{base}"
    dsts = written[0] if written else None
    fresh = []
    for i in range(n):
        pick = [v[i] if isinstance(v, (list, tuple)) and len(v) == n else v for v in pos]
        kwi = {
            k: v[i] if isinstance(v, (list, tuple)) and len(v) == n else v for k, v in kw.items()
        }
        m = _to_meta(dsts[i]) if dsts is not None else meta[i]
        (v,) = op_values(label, tree_map(arg, pick), tree_map(arg, kwi), [m])
        if dsts is not None:
            _store(dsts[i], v)
        else:
            fresh.append(SymTensor.fresh(m, v))
    return None if dsts is not None else fresh
