"""Translation validation of GSR rewrites by per-element symbolic execution.

The *real* ``step()`` runs on :class:`SymTensor`, a ``torch.Tensor`` wrapper subclass whose storage
is a numpy object array of sympy expressions.  ``__torch_dispatch__`` sees every aten op after
decomposition (``torch.sqrt(v, out=g)``, ``x.add_()``, ``torch._foreach_*``, torch.optim internals):

* each op first runs on ``meta`` tensors of the same size/stride/offset: output shapes, dtypes and
  strides come out exactly as in torch, and shape errors are raised as torch would;
* views (``func.is_view``: detach, view, slice, ...) share the storage array of their base at the
  meta run's offset/strides, so writes through any alias (``p.data``, ``out=`` into ``p.grad``,
  two Python names) are seen by all of them;
* per-element ops map to sympy (``_POINTWISE``); in-place forms write into ``self``, ``out=`` forms
  into ``out``; ``_foreach_*`` ops run as one per-tensor op per list index;
* other ops (norm, sum, matmul, unknown) become uninterpreted ``sympy.Function`` s named after the
  op, applied to the output position and *all* input elements; random ops add a call counter.

Scalars stay concrete: each float entering a tensor op becomes the simplest rational (or square
root of one: host-side ``sqrt(1 - b2**t)``) within 8 ulps of an O(1) operand and 1e-6 relative
(float32 ulps for float32-representable values), so tensor arithmetic is exact real arithmetic and
host-side rounding (``1 - b1 / b2``) is abstracted away.  This checks real-number semantics (the
contract's "tolerance" class), not bitwise identity.

``validate_rewrite`` compares params, ``opt.state`` and scalar ``param_groups`` entries: structural
equality, then ``expand``, ``cancel(together())`` and (small expressions, 1 s budget) ``simplify``.
By default params and state are compared after step 1, then replaced by fresh symbols, so later
steps are proved from an *arbitrary* state (retried from the initial state if that fails).  A
numeric check at random points only picks whether costlier proofs are tried, and feeds notes.
Limits: data-dependent control flow (``.item()`` on a symbolic value) raises
:class:`SymbolicExecutionError`, as do in-place metadata ops (``t_``, ``resize_``); uninterpreted
functions compare syntactically (``norm(2g)/2`` is not ``norm(g)``); buffers kept outside
``opt.state`` (on ``self``) are not compared.
"""

from __future__ import annotations

import inspect
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import sympy
import torch
from sympy.logic.boolalg import BooleanAtom, BooleanFunction
from torch.utils._pytree import tree_flatten, tree_map

Fn = Callable[..., Any]
Assumptions = Mapping[str, Mapping[str, bool]]
_COUNTERS = {"rand": 0, "uninit": 0}
_SIMPLIFY_MAX_OPS = 80  # sympy.simplify: ~0.5 s at 15 ops with sign(), minutes at 400
_SIMPLIFY_BUDGET_S = 1.0  # per validate_rewrite; beyond it differences are reported unproved
_BOOLS = (sympy.core.relational.Relational, BooleanAtom, BooleanFunction)  # not Symbol
#: set by kernel_trace while it runs: a host scalar's value -> the expression it was computed from
SCALAR_LOOKUP: Callable[[float], Any] | None = None
#: set by kernel_trace while it runs: ``.item()`` of an expression over tagged host scalars only
#: (a 0-d step tensor) -> a tagged Python number; None when the expression reads tensor elements
SCALAR_ITEM: Callable[[Any, bool], Any] | None = None


class SymbolicExecutionError(RuntimeError):
    """The step cannot run symbolically (data-dependent control flow, unsupported op)."""


def _simple(exact: Fraction, tol: float, ks: range) -> Fraction | None:
    for k in ks:  # simplest decimal-ish rational first: 0.9 -> 9/10
        f = exact.limit_denominator(10**k)
        if f != 0 and abs(f - exact) <= tol:
            return f
    return None


def _const(x: Any, dtype: torch.dtype | None = None) -> Any:
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


def _num(x: Any) -> Any:
    return sympy.Piecewise((1, x), (0, True)) if isinstance(x, _BOOLS) else x


def _same(x: Any) -> Any:
    return x


def _bool(x: Any) -> Any:
    return x if isinstance(x, _BOOLS) else sympy.Ne(x, 0)


def _obj(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    a = np.empty((), dtype=object)
    a[()] = x
    return a


def _vec(exprs: list[Any], shape: tuple[int, ...] | None = None) -> np.ndarray:
    a = np.empty(len(exprs), dtype=object)
    a[:] = exprs
    return a if shape is None else a.reshape(shape)


def _clamp(self: Any, lo: Any = None, hi: Any = None, **_: Any) -> Any:
    r = self if lo is None else sympy.Max(self, lo)
    return r if hi is None else sympy.Min(r, hi)


def _table(spec: str, wrap: Callable[[Fn], Fn]) -> dict[str, Fn]:
    """``"aten_name:sympy_name ..."`` -> {aten_name: wrap(sympy.sympy_name)}."""
    return {a: wrap(getattr(sympy, s)) for a, s in (w.split(":") for w in spec.split())}


_UNARY = "sqrt:sqrt abs:Abs sign:sign sgn:sign exp:exp log:log tanh:tanh sin:sin cos:cos"
_BINARY = "maximum:Max minimum:Min max.other:Max min.other:Min fmax:Max fmin:Min atan2:atan2"
_BINARY += " gt:Gt lt:Lt ge:Ge le:Le eq:Eq ne:Ne"
_LOGIC = "logical_and:And logical_or:Or logical_xor:Xor"


def _bitwise(f: Fn, name: str) -> Fn:
    """``&``/``|`` of two comparisons is logical; of integers it stays uninterpreted."""

    def op(self: Any, other: Any, **_: Any) -> Any:
        if isinstance(self, _BOOLS) and isinstance(other, _BOOLS):
            return f(self, other)
        return sympy.Function(f"aten.{name}")(self, other)

    return op


_POINTWISE: dict[str, Fn] = {
    **_table(_UNARY + " atan:atan erf:erf", lambda f: lambda self, **_: f(self)),
    **_table(_BINARY, lambda f: lambda self, other, **_: f(self, other)),
    **_table(_LOGIC, lambda f: lambda self, other, **_: f(_bool(self), _bool(other))),
    "bitwise_and": _bitwise(sympy.And, "bitwise_and"),
    "bitwise_or": _bitwise(sympy.Or, "bitwise_or"),
    "add": lambda self, other, alpha=1, **_: self + alpha * other,
    "sub": lambda self, other, alpha=1, **_: self - alpha * other,
    "rsub": lambda self, other, alpha=1, **_: other - alpha * self,
    "mul": lambda self, other, **_: self * other,
    "div": lambda self, other, rounding_mode=None, **_: (
        self / other if rounding_mode is None else sympy.Function(rounding_mode)(self / other)
    ),
    "neg": lambda self, **_: -self,
    "rsqrt": lambda self, **_: 1 / sympy.sqrt(self),
    "reciprocal": lambda self, **_: 1 / self,
    "pow": lambda self, exponent, **_: self**exponent,
    "square": lambda self, **_: self**2,
    "log1p": lambda self, **_: sympy.log(1 + self),
    "expm1": lambda self, **_: sympy.exp(self) - 1,
    "sigmoid": lambda self, **_: 1 / (1 + sympy.exp(-self)),
    "relu": lambda self, **_: sympy.Max(self, 0),
    "clamp": _clamp,
    "clamp_min": lambda self, lo, **_: sympy.Max(self, lo),
    "clamp_max": lambda self, hi, **_: sympy.Min(self, hi),
    "lerp": lambda self, end, weight, **_: self + weight * (end - self),
    "addcmul": lambda self, t1, t2, value=1, **_: self + value * t1 * t2,
    "addcdiv": lambda self, t1, t2, value=1, **_: self + value * t1 / t2,
    "where": lambda c, a, b, **_: sympy.Piecewise((_num(a), _bool(c)), (_num(b), True)),
    "logical_not": lambda self, **_: sympy.Not(_bool(self)),
    "clone": lambda self, **_: self,
    "lift_fresh_copy": lambda self, **_: self,
    "copy": lambda src, *_a, **_: src,  # ops in _NO_SELF do not receive ``self``
    "fill": lambda value, *_a, **_: value,
    "full_like": lambda value, *_a, **_: value,
    "new_full": lambda size, value, *_a, **_: value,
    **dict.fromkeys(["zero", "zeros_like", "new_zeros"], lambda *_a, **_: sympy.Integer(0)),
    **dict.fromkeys(["ones_like", "new_ones"], lambda *_a, **_: sympy.Integer(1)),
}
_NO_SELF = {"copy", "fill", "zero", "zeros_like", "ones_like", "full_like", "new_zeros"}
_NO_SELF |= {"new_ones", "new_full"}
_LOGICAL = {"where", "logical_not", "logical_and", "logical_or", "logical_xor", "copy", "clone",
            "bitwise_and", "bitwise_or"}
_ALIAS = {"_unsafe_view", "_reshape_alias", "lift_fresh"}
_META_INPLACE = {"resize_", "as_strided_", "set_", "t_", "transpose_", "squeeze_", "unsqueeze_"}
_RANDOM = ("rand", "normal", "uniform", "bernoulli", "exponential", "multinomial", "dropout")


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
        return SymTensor.fresh(torch.empty(len(exprs), dtype=dtype, device="meta"), _vec(exprs))

    def exprs(self) -> np.ndarray:
        return _obj(self._box[_index(self)])

    def write(self, values: Any) -> None:
        self._box[_index(self)] = np.broadcast_to(_obj(values), tuple(self.shape))

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


def _arg(x: Any) -> Any:
    """Tensor -> object array of expressions; Python scalar -> sympy number; else unchanged."""
    if isinstance(x, SymTensor):
        return x.exprs()
    if isinstance(x, torch.Tensor):
        vals = [_const(v, x.dtype) for v in x.detach().reshape(-1).tolist()]
        return _vec(vals, tuple(x.shape))
    return _const(x) if isinstance(x, (bool, int, float)) else x


def _apply(key: str, fn: Fn, pos: list[Any], kw: dict[str, Any], shape: Any) -> np.ndarray:
    """Broadcast the scalar rule ``fn`` over all array arguments."""
    slots = [i for i, v in enumerate(pos) if isinstance(v, np.ndarray)]
    names = [k for k, v in kw.items() if isinstance(v, np.ndarray)]
    conv: Fn = _same if key in _LOGICAL else _num

    def one(*xs: Any) -> Any:
        p, k = list(pos), dict(kw)
        for i, x in zip(slots, xs, strict=False):
            p[i] = conv(x)
        k.update({n: conv(x) for n, x in zip(names, xs[len(slots) :], strict=True)})
        return fn(*p, **k)

    arrays = [pos[i] for i in slots] + [kw[n] for n in names]
    res = np.frompyfunc(one, len(arrays), 1)(*arrays) if arrays else fn(*pos, **kw)
    return np.broadcast_to(_obj(res), tuple(shape))


def _leaves(xs: Any) -> list[Any]:
    out: list[Any] = []
    for x in tree_flatten(xs)[0]:
        if isinstance(x, np.ndarray):
            out.extend(x.ravel().tolist())
        elif x is not None:
            out.append(x if isinstance(x, sympy.Basic) else sympy.Symbol(str(x)))
    return out


def _values(label: str, pos: list[Any], kw: dict[str, Any], metas: list[Any]) -> list[Any]:
    """Values of each output tensor of op ``label`` (``name`` or ``name.overload``)."""
    name = label.split(".")[0]
    key = label if label in _POINTWISE else name
    if key in _POINTWISE and len(metas) == 1:
        pos = pos[1:] if key in _NO_SELF else pos
        return [_apply(key, _POINTWISE[key], pos, kw, metas[0].shape)]
    dt = metas[0].dtype
    if name == "_to_copy" and (dt.is_floating_point or dt == torch.bool):
        conv = _num if dt.is_floating_point else _bool
        return [_apply("clone", lambda x, *_a, **_: conv(x), pos[:1], {}, metas[0].shape)]
    mask = pos[1][0] if name == "index_put" and len(pos[1]) == 1 else None
    if isinstance(mask, np.ndarray) and all(isinstance(e, _BOOLS) for e in mask.ravel()):
        new = pos[0] + pos[2] if len(pos) > 3 and pos[3] == 1 else pos[2]  # accumulate
        return [_apply("where", _POINTWISE["where"], [mask, new, pos[0]], {}, metas[0].shape)]
    if name in ("empty_like", "new_empty", "empty_strided"):  # garbage: fresh symbols
        _COUNTERS["uninit"] += 1
        syms = [sympy.Symbol(f"uninit{_COUNTERS['uninit']}_{j}") for j in range(metas[0].numel())]
        return [_vec(syms, tuple(metas[0].shape))]
    args = _leaves(pos) + _leaves({k: v for k, v in sorted(kw.items()) if v is not None})
    if any(r in name for r in _RANDOM):
        _COUNTERS["rand"] += 1
        args = [sympy.Integer(_COUNTERS["rand"]), *args]
    out = []
    for k, m in enumerate(metas):  # uninterpreted: f(output position, all inputs)
        f = sympy.Function(f"aten.{label}" + (f"#{k}" if len(metas) > 1 else ""))
        at = [f(*([sympy.Integer(j)] if m.numel() > 1 else []), *args) for j in range(m.numel())]
        out.append(_vec(at, tuple(m.shape)))
    return out


def _store(dst: Any, vals: Any) -> None:
    if isinstance(dst, SymTensor):
        return dst.write(vals)
    flat = np.broadcast_to(_obj(vals), tuple(dst.shape)).ravel().tolist()
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
    vals = _values(label, tree_map(_arg, pos), tree_map(_arg, kw), metas)
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
    label = base.rstrip("_") if base.rstrip("_") in _POINTWISE else f"_foreach_{base}"
    dsts = written[0] if written else None
    fresh = []
    for i in range(n):
        pick = [v[i] if isinstance(v, (list, tuple)) and len(v) == n else v for v in pos]
        kwi = {
            k: v[i] if isinstance(v, (list, tuple)) and len(v) == n else v for k, v in kw.items()
        }
        m = _to_meta(dsts[i]) if dsts is not None else meta[i]
        (v,) = _values(label, tree_map(_arg, pick), tree_map(_arg, kwi), [m])
        if dsts is not None:
            _store(dsts[i], v)
        else:
            fresh.append(SymTensor.fresh(m, v))
    return None if dsts is not None else fresh


@dataclass
class ValidationResult:
    """Outcome of :func:`validate_rewrite`.

    ``exact_same_ops`` is only a hint: sympy canonicalises at construction (flattens and sorts
    commutative operands, writes ``a / b`` as ``a * b**-1``, folds rational constants) and
    scalars are rationalised, so True does not imply bitwise-equal float results, and False
    does not rule them out.
    """

    equal: bool
    exact_same_ops: bool
    residuals: dict[str, str] = field(default_factory=dict)
    steps: int = 2
    notes: list[str] = field(default_factory=list)


def _sym(name: str, role: str, assumptions: Assumptions) -> sympy.Symbol:
    return sympy.Symbol(name, **dict(assumptions.get(role, {"real": True})))




def _snapshot(params: list[SymTensor], opt: Any) -> dict[str, Any]:
    position = {id(p): i for i, p in enumerate(params)}

    def put(key: str, v: Any, depth: int = 0) -> None:
        if isinstance(v, torch.Tensor):
            out.update({f"{key}[{j}]": e for j, e in enumerate(_arg(v).ravel())})
        elif isinstance(v, (bool, int, float)):
            out[key] = _const(v)
        elif key.startswith("self.") and depth < 4 and isinstance(v, (list, tuple, dict)):
            items = v.items() if isinstance(v, dict) else enumerate(v)
            for k, x in items:
                name = f"p{position[id(k)]}" if id(k) in position else repr(k)
                put(f"{key}[{name}]", x, depth + 1)
        elif not isinstance(v, (list, tuple)) or key.startswith(("state", "self.")):
            out[key] = sympy.Symbol(f"<{type(v).__name__}>" if key.startswith("self.")
                                    else f"<{v!r}>")

    out: dict[str, Any] = {}
    for i, p in enumerate(params):
        put(f"param[{i}]", p)
        for key, s in opt.state.get(p, {}).items():
            put(f"state[{i}][{key!r}]", s)
    for i, group in enumerate(opt.param_groups):
        for key, v in group.items():
            if key != "params":
                put(f"group[{i}][{key!r}]", v)
    from gsr_rewrite.proof.check import is_bookkeeping  # what the stress matrix compares, too

    for key, v in vars(opt).items():  # a step counter, an EMA of params, a log of updates
        if not is_bookkeeping(key):
            put(f"self.{key}", v)
    return out


def _symbolic_param(i: int, shape: tuple[int, ...], asm: Assumptions, suffix: str = ""
                    ) -> list[Any]:
    return [_sym(f"p{i}_{j}{suffix}", "param", asm) for j in range(math.prod(shape))]


def _second_group(opt: Any, params: list[SymTensor]) -> None:
    """The last params go to a second group with half the first group's lr (when it has one), so
    that per-group options are read from the right group."""
    extra: dict[str, Any] = {}
    lr = opt.param_groups[0].get("lr")
    if isinstance(lr, float):
        extra["lr"] = lr / 2
    opt.add_param_group({"params": params, **extra})


#: params of several ranks (1-D, 2-D, 3-D: `p.dim() > 1` branches), 2 elements each; the last one
#: in a second param group
PROOF_SHAPES: tuple[tuple[int, ...], ...] = ((2,), (2, 1), (1, 2, 1))


def symbolic_trajectory(
    optimizer_cls: type,
    kwargs: dict[str, Any],
    *,
    steps: int = 2,
    n_params: int = 2,
    numel: int = 2,
    resymbolize: bool = False,
    assumptions: Assumptions | None = None,
    shapes: tuple[tuple[int, ...], ...] | None = None,
    groups: int = 1,
) -> dict[str, Any]:
    """Final param/state elements after ``steps`` steps with symbolic params and grads.

    Param ``i`` element ``j`` starts as ``p{i}_{j}``; its grad at step ``s`` is ``g{i}_{j}_{s}``.
    Keys: ``param[0][1]``, ``state[0]['exp_avg'][1]``, ``group[0]['lr']``, ``self.ATTR``.  With
    ``resymbolize``, values after step 1 are also kept under ``after_step1:`` keys, then params
    and state tensors are replaced by fresh symbols (``p0_1_s1``, ``exp_avg0_1_s1``).
    ``assumptions`` maps "param", "grad" or a state key to sympy assumptions (default
    ``real=True``).  ``shapes`` (default ``n_params`` vectors of ``numel``) gives each param's
    shape; with ``groups=2`` the last param is in a second group (see ``_second_group``).
    """
    asm = dict(assumptions or {})
    _COUNTERS.update(rand=0, uninit=0)
    shapes = shapes or ((numel,),) * n_params
    params = [SymTensor.fresh(torch.empty(shape, device="meta"),
                              _vec(_symbolic_param(i, shape, asm), shape))
              for i, shape in enumerate(shapes)]
    split = len(params) - 1 if groups > 1 and len(params) > 1 else len(params)
    opt = optimizer_cls(params[:split], **kwargs)
    if split < len(params):
        _second_group(opt, params[split:])
    out: dict[str, Any] = {}
    for s in range(1, steps + 1):
        for i, p in enumerate(params):
            p.grad = SymTensor.fresh(torch.empty(p.shape, device="meta"), _vec(
                [_sym(f"g{i}_{j}_{s}", "grad", asm) for j in range(p.numel())], tuple(p.shape)))
        opt.step()
        if resymbolize and s == 1 and steps > 1:
            out.update({f"after_step1:{k}": v for k, v in _snapshot(params, opt).items()})
            for i, p in enumerate(params):
                p.write(_vec(_symbolic_param(i, tuple(p.shape), asm, "_s1"), tuple(p.shape)))
                for key, t in opt.state.get(p, {}).items():
                    if isinstance(t, SymTensor):
                        syms = [_sym(f"{key}{i}_{j}_s1", str(key), asm) for j in range(t.numel())]
                        t.write(_vec(syms, tuple(t.shape)))
    out.update(_snapshot(params, opt))
    return out


def _numeric_gap(x: Any, y: Any) -> float | None:
    """Worst relative |x - y| at random points with |v| in [0.25, 2], signed, else positive.

    None if not evaluable (uninterpreted functions, Max of complex intermediates)."""
    syms = sorted(x.free_symbols | y.free_symbols, key=str)
    rng = random.Random(0)
    for signs in ((-1, 1), (1,)):
        try:
            worst = 0.0
            for _ in range(6):
                pt = {s: sympy.Float(rng.uniform(0.25, 2.0) * rng.choice(signs)) for s in syms}
                a, b = complex(x.xreplace(pt).evalf()), complex(y.xreplace(pt).evalf())
                worst = max(worst, abs(a - b) / (1.0 + abs(a)))
        except (TypeError, ValueError):
            continue
        if math.isfinite(worst):
            return worst
    return None


def _compare(
    a: dict[str, Any], b: dict[str, Any], prefix: str, deadline: float
) -> ValidationResult:
    res = ValidationResult(equal=True, exact_same_ops=True)
    for key in sorted(a.keys() | b.keys()):
        name = prefix + key
        if key not in a or key not in b:
            res.residuals[name] = "missing on " + ("original" if key not in a else "rewritten")
            continue
        x, y = _num(a[key]), _num(b[key])
        if x == y:
            continue
        res.exact_same_ops = False
        d = sympy.expand(x - y)
        gap = None if d == 0 else _numeric_gap(x, y)  # picks whether costly proofs are tried
        if d != 0 and (gap is None or gap <= 1e-9):
            d = sympy.cancel(sympy.together(d))  # rational-function identities
            if (
                d != 0
                and sympy.count_ops(d) <= _SIMPLIFY_MAX_OPS
                and time.perf_counter() < deadline
            ):
                d = sympy.simplify(d)
        if d == 0:
            continue
        text = str(d)
        res.residuals[name] = text if len(text) <= 400 else text[:400] + " ..."
        if gap is not None:
            verdict = "equal within 1e-9" if gap <= 1e-9 else f"different (rel {gap:.3g})"
            res.notes.append(f"{name}: not proved; numerically {verdict} at random points")
    res.exact_same_ops &= not res.residuals
    return res


def validate_rewrite(
    original_cls: type,
    rewritten_cls: type,
    kwargs: dict[str, Any],
    *,
    steps: int = 2,
    assumptions: Assumptions | None = None,
    n_params: int = 2,
    numel: int = 2,
    resymbolize: bool = True,
    shapes: tuple[tuple[int, ...], ...] | None = None,
    groups: int = 1,
) -> ValidationResult:
    """Prove ``rewritten_cls`` computes the same params and state as ``original_cls``.

    ``p.grad`` after step is not compared (the R-variant may overwrite it).  Runs foreach False
    and True when the original's constructor takes ``foreach`` and ``kwargs`` omit it.
    """
    t0 = time.perf_counter()
    deadline = t0 + _SIMPLIFY_BUDGET_S
    has_flag = "foreach" in inspect.signature(original_cls).parameters
    configs = [False, True] if has_flag and "foreach" not in kwargs else [None]
    res = ValidationResult(equal=True, exact_same_ops=True, steps=steps)
    opts: dict[str, Any] = dict(
        steps=steps, n_params=n_params, numel=numel, assumptions=assumptions, shapes=shapes,
        groups=groups,
    )
    for flag in configs:
        kw = dict(kwargs) if flag is None else {**kwargs, "foreach": flag}
        prefix = "" if flag is None else f"foreach={flag}: "

        def run(resym: bool, kw: dict[str, Any] = kw, prefix: str = prefix) -> ValidationResult:
            a = symbolic_trajectory(original_cls, kw, resymbolize=resym, **opts)
            return _compare(
                a,
                symbolic_trajectory(rewritten_cls, kw, resymbolize=resym, **opts),
                prefix,
                deadline,
            )

        sub = run(resymbolize and steps > 1)
        if sub.residuals and resymbolize and steps > 1 and "after_step1:" not in str(sub.residuals):
            retry = run(False)  # maybe equal only from the initial state
            if not retry.residuals:
                res.notes.append(
                    f"{prefix}equal from the initial state only, not from an "
                    "arbitrary state after step 1"
                )
                sub = retry
        res.exact_same_ops &= sub.exact_same_ops
        res.residuals.update(sub.residuals)
        res.notes.extend(sub.notes)
    res.equal = not res.residuals
    mode = "state re-symbolized after step 1" if resymbolize else "from the initial state"
    res.notes.append(
        f"configs foreach={configs}, {steps} steps, "
        f"{'params of shapes ' + str(list(shapes)) if shapes else f'{n_params}x{numel} params'}, "
        f"{groups} group(s), "
        f"{mode}; {time.perf_counter() - t0:.2f} s"
    )
    return res
