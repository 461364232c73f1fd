"""Tagged host scalars: real Python numbers that also carry the sympy expression they came from.

Used by :mod:`gsr_rewrite.triton_backend.trace` while it runs an optimizer's step: arithmetic on
:class:`TaggedFloat` / :class:`TaggedInt` keeps the expression, comparisons record a *guard*,
``math.sqrt`` & co. keep the tag while ``_tracing`` is active, and a plain float entering a tensor
op is mapped back to its expression by value (``_lookup``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sympy

from gsr_rewrite.proof import symbolic

#: values never mapped back to an expression: literals (``1 - beta``, ``x ** 2``) are these too
_SIMPLE = {0.0, 1.0, -1.0, 2.0, 0.5}


class KernelTraceError(RuntimeError):
    """The step has no per-element program (the reason says why)."""


# -- tagged host scalars -------------------------------------------------------------------------

_registry: dict[float, Any] | None = None  # value -> expression, while a trace runs
_symbol_values: dict[Any, float] = {}  # tagged symbol -> its value in the running trace
_guards: list[tuple[Any, bool]] = []
_CONFLICT = object()


def _expr(x: Any) -> Any:
    if isinstance(x, (TaggedFloat, TaggedInt)):
        return x.expr
    if isinstance(x, bool):
        return sympy.Integer(int(x))
    if isinstance(x, (int, float)) and _registry is not None:
        hit = _lookup(x)  # a tagged value that lost its tag on the way (``.item()`` in C++)
        if hit is not None:
            return hit
    if isinstance(x, int):
        return sympy.Integer(x)
    return sympy.Float(x) if isinstance(x, float) else None


def tag(value: float, expr: Any) -> TaggedFloat | TaggedInt:
    """``value`` carrying ``expr``; registered so that the same value in a tensor op maps back."""
    t: TaggedFloat | TaggedInt = (TaggedInt if type(value) is int else TaggedFloat)(value)
    t.expr = expr
    if _registry is not None and float(value) not in _SIMPLE:
        old = _registry.get(float(value))
        same = old is None or old is _CONFLICT or old == expr or sympy.expand(old - expr) == 0
        _registry[float(value)] = (old if old is not None else expr) if same else _CONFLICT
    return t


def _lift(op: Callable[[Any, Any], Any], sym: Callable[[Any, Any], Any]) -> Any:
    def forward(self: Any, other: Any) -> Any:
        e = _expr(other)
        if e is None:
            return NotImplemented
        value = op(_plain(self), _plain(other))
        return tag(value, sym(self.expr, e)) if isinstance(value, (int, float)) else value

    def reflected(self: Any, other: Any) -> Any:
        e = _expr(other)
        if e is None:
            return NotImplemented
        value = op(_plain(other), _plain(self))
        return tag(value, sym(e, self.expr)) if isinstance(value, (int, float)) else value

    return forward, reflected


def _compare(op: Callable[[Any, Any], bool], rel: Callable[[Any, Any], Any]) -> Any:
    def method(self: Any, other: Any) -> Any:
        e = _expr(other)
        if e is None:
            return NotImplemented
        result = op(_plain(self), _plain(other))
        _guards.append((rel(self.expr, e), bool(result)))
        return result

    return method


def _plain(x: Any) -> Any:
    if isinstance(x, TaggedInt):
        return int.__int__(x)
    return float.__float__(x) if isinstance(x, TaggedFloat) else x


class _TaggedOps:
    expr: Any
    __add__, __radd__ = _lift(lambda a, b: a + b, lambda a, b: a + b)
    __sub__, __rsub__ = _lift(lambda a, b: a - b, lambda a, b: a - b)
    __mul__, __rmul__ = _lift(lambda a, b: a * b, lambda a, b: a * b)
    __truediv__, __rtruediv__ = _lift(lambda a, b: a / b, lambda a, b: a / b)
    __pow__, __rpow__ = _lift(lambda a, b: a**b, lambda a, b: a**b)
    __eq__ = _compare(lambda a, b: a == b, sympy.Eq)
    __ne__ = _compare(lambda a, b: a != b, sympy.Ne)
    __lt__ = _compare(lambda a, b: a < b, sympy.Lt)
    __le__ = _compare(lambda a, b: a <= b, sympy.Le)
    __gt__ = _compare(lambda a, b: a > b, sympy.Gt)
    __ge__ = _compare(lambda a, b: a >= b, sympy.Ge)

    def __neg__(self) -> Any:
        return tag(-_plain(self), -self.expr)

    def __pos__(self) -> Any:
        return self

    def __abs__(self) -> Any:
        return tag(abs(_plain(self)), sympy.Abs(self.expr))

    def __bool__(self) -> bool:
        result = bool(_plain(self) != 0)
        _guards.append((sympy.Ne(self.expr, 0), result))
        return result

    def __hash__(self) -> int:
        return hash(_plain(self))

    def __repr__(self) -> str:
        return f"{_plain(self)!r}<{self.expr}>"


class TaggedFloat(_TaggedOps, float):
    """A float that also carries the sympy expression it was computed from."""


class TaggedInt(_TaggedOps, int):
    """An int that also carries the sympy expression it was computed from."""


_MATH = {"sqrt": sympy.sqrt, "exp": sympy.exp, "log": sympy.log, "pow": lambda a, b: a**b}


@contextmanager
def _tracing(registry: dict[float, Any]) -> Iterator[None]:
    """Patch ``math`` so tagged arguments keep their tag; map tensor-op scalars back by value."""
    global _registry
    saved = {name: getattr(math, name) for name in _MATH}

    def patched(name: str) -> Callable[..., Any]:
        def fn(*args: Any) -> Any:
            value = saved[name](*(_plain(a) for a in args))
            if any(isinstance(a, (TaggedFloat, TaggedInt)) for a in args):
                return tag(value, _MATH[name](*(_expr(a) for a in args)))
            return value

        return fn

    _registry = registry
    _guards.clear()
    symbolic.SCALAR_LOOKUP, symbolic.SCALAR_ITEM = _lookup, _item
    try:
        for name in _MATH:
            setattr(math, name, patched(name))
        yield
    finally:
        for name, fn in saved.items():
            setattr(math, name, fn)
        symbolic.SCALAR_LOOKUP = symbolic.SCALAR_ITEM = None
        _registry = None


def _item(expr: Any, floating: bool) -> Any:
    """``.item()`` of a 0-d tensor holding an expression of tagged host scalars: tagged."""
    if not expr.free_symbols or not expr.free_symbols <= _symbol_values.keys():
        return None
    value = float(expr.xreplace(_symbol_values))
    return tag(value if floating else int(value), expr)


def _lookup(x: float) -> Any:
    if float(x) in _SIMPLE:
        return None
    hit = None if _registry is None else _registry.get(float(x))
    if hit is _CONFLICT:
        raise KernelTraceError(f"host scalar value {x!r} has two different derivations")
    return hit
