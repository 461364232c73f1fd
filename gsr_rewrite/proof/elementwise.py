"""What aten ops compute per element, as sympy expressions: the rules `symbolic.SymTensor` runs.

`op_values` gives the values of an op's outputs from its arguments (numpy object arrays of
expressions, or concrete scalars): per-element ops map to sympy through `POINTWISE`, broadcast
over the array arguments; ``empty_like`` and kin give fresh ``uninit`` symbols; any other op (norm,
sum, matmul, unknown) becomes an uninterpreted ``sympy.Function`` named after the op, applied to
the output position and *all* input elements, with a call counter for random ops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import sympy
import torch
from sympy.logic.boolalg import BooleanAtom, BooleanFunction
from torch.utils._pytree import tree_flatten

Fn = Callable[..., Any]
#: random ops and uninitialised allocations so far, numbering their fresh values (reset by
#: `translation.symbolic_trajectory` at the start of each run)
COUNTERS = {"rand": 0, "uninit": 0}
_BOOLS = (sympy.core.relational.Relational, BooleanAtom, BooleanFunction)  # not Symbol


def num(x: Any) -> Any:
    """A boolean expression as 1 or 0; any other expression unchanged."""
    return sympy.Piecewise((1, x), (0, True)) if isinstance(x, _BOOLS) else x


def _same(x: Any) -> Any:
    return x


def _bool(x: Any) -> Any:
    return x if isinstance(x, _BOOLS) else sympy.Ne(x, 0)


def obj(x: Any) -> np.ndarray:
    """``x`` as a numpy object array (a 0-d one unless it already is an array)."""
    if isinstance(x, np.ndarray):
        return x
    a = np.empty((), dtype=object)
    a[()] = x
    return a


def vec(exprs: list[Any], shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``exprs`` as a 1-D numpy object array, reshaped to ``shape`` when given."""
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


POINTWISE: dict[str, Fn] = {
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
    "where": lambda c, a, b, **_: sympy.Piecewise((num(a), _bool(c)), (num(b), True)),
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
_RANDOM = ("rand", "normal", "uniform", "bernoulli", "exponential", "multinomial", "dropout")


def _apply(key: str, fn: Fn, pos: list[Any], kw: dict[str, Any], shape: Any) -> np.ndarray:
    """Broadcast the scalar rule ``fn`` over all array arguments."""
    slots = [i for i, v in enumerate(pos) if isinstance(v, np.ndarray)]
    names = [k for k, v in kw.items() if isinstance(v, np.ndarray)]
    conv: Fn = _same if key in _LOGICAL else num

    def one(*xs: Any) -> Any:
        p, k = list(pos), dict(kw)
        for i, x in zip(slots, xs, strict=False):
            p[i] = conv(x)
        k.update({n: conv(x) for n, x in zip(names, xs[len(slots) :], strict=True)})
        return fn(*p, **k)

    arrays = [pos[i] for i in slots] + [kw[n] for n in names]
    res = np.frompyfunc(one, len(arrays), 1)(*arrays) if arrays else fn(*pos, **kw)
    return np.broadcast_to(obj(res), tuple(shape))


def _leaves(xs: Any) -> list[Any]:
    out: list[Any] = []
    for x in tree_flatten(xs)[0]:
        if isinstance(x, np.ndarray):
            out.extend(x.ravel().tolist())
        elif x is not None:
            out.append(x if isinstance(x, sympy.Basic) else sympy.Symbol(str(x)))
    return out


def op_values(label: str, pos: list[Any], kw: dict[str, Any], metas: list[Any]) -> list[Any]:
    """Values of each output tensor of op ``label`` (``name`` or ``name.overload``)."""
    name = label.split(".")[0]
    key = label if label in POINTWISE else name
    if key in POINTWISE and len(metas) == 1:
        pos = pos[1:] if key in _NO_SELF else pos
        return [_apply(key, POINTWISE[key], pos, kw, metas[0].shape)]
    dt = metas[0].dtype
    if name == "_to_copy" and (dt.is_floating_point or dt == torch.bool):
        conv = num if dt.is_floating_point else _bool
        return [_apply("clone", lambda x, *_a, **_: conv(x), pos[:1], {}, metas[0].shape)]
    mask = pos[1][0] if name == "index_put" and len(pos[1]) == 1 else None
    if isinstance(mask, np.ndarray) and all(isinstance(e, _BOOLS) for e in mask.ravel()):
        new = pos[0] + pos[2] if len(pos) > 3 and pos[3] == 1 else pos[2]  # accumulate
        return [_apply("where", POINTWISE["where"], [mask, new, pos[0]], {}, metas[0].shape)]
    if name in ("empty_like", "new_empty", "empty_strided"):  # garbage: fresh symbols
        COUNTERS["uninit"] += 1
        syms = [sympy.Symbol(f"uninit{COUNTERS['uninit']}_{j}") for j in range(metas[0].numel())]
        return [vec(syms, tuple(metas[0].shape))]
    args = _leaves(pos) + _leaves({k: v for k, v in sorted(kw.items()) if v is not None})
    if any(r in name for r in _RANDOM):
        COUNTERS["rand"] += 1
        args = [sympy.Integer(COUNTERS["rand"]), *args]
    out = []
    for k, m in enumerate(metas):  # uninterpreted: f(output position, all inputs)
        f = sympy.Function(f"aten.{label}" + (f"#{k}" if len(metas) > 1 else ""))
        at = [f(*([sympy.Integer(j)] if m.numel() > 1 else []), *args) for j in range(m.numel())]
        out.append(vec(at, tuple(m.shape)))
    return out
