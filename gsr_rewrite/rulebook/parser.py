"""Rules as data: rule text translated to sympy through a whitelist (never eval'd), and one
[[rule]] table of a rules/*.toml file checked and parsed into a `Rule` (not yet proved)."""

from __future__ import annotations

import ast
import math
import operator as op
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sympy as sp
from sympy.logic.boolalg import Boolean

_SIGN: dict[str, Callable[[float], bool]] = {
    "positive": lambda x: x > 0, "negative": lambda x: x < 0, "nonzero": lambda x: x != 0,
    "nonnegative": lambda x: x >= 0, "nonpositive": lambda x: x <= 0,
}  # fmt: skip
_FACTS = {  # condition atom `x OP 0` -> sympy assumption on x
    "!=": "nonzero", ">": "positive", "<": "negative", ">=": "nonnegative", "<=": "nonpositive",
}  # fmt: skip
_KEYS = {"id", "summary", "symbols", "before", "after", "condition", "exact", "substitute"}
_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: op.add, ast.Sub: op.sub, ast.Mult: op.mul, ast.Div: op.truediv, ast.Pow: sp.Pow,
    ast.Eq: sp.Eq, ast.NotEq: sp.Ne, ast.Lt: sp.Lt, ast.LtE: sp.Le, ast.Gt: sp.Gt, ast.GtE: sp.Ge,
    ast.USub: op.neg, ast.UAdd: op.pos, ast.Not: sp.Not, ast.And: sp.And, ast.Or: sp.Or,
}  # fmt: skip


def _clamp(x: Any, lo: Any, hi: Any) -> Any:
    x = x if lo is None else sp.Max(x, lo)
    return x if hi is None else sp.Min(x, hi)


# name -> (parameters, defaults, per-element meaning of the torch op of that name)
_FUNCS: dict[str, tuple[tuple[str, ...], dict[str, Any], Callable[..., Any]]] = {
    "sqrt": (("x",), {}, sp.sqrt), "rsqrt": (("x",), {}, lambda x: 1 / sp.sqrt(x)),
    "reciprocal": (("x",), {}, lambda x: 1 / x), "abs": (("x",), {}, sp.Abs),
    "sign": (("x",), {}, sp.sign), "exp": (("x",), {}, sp.exp), "log": (("x",), {}, sp.log),
    "maximum": (("a", "b"), {}, sp.Max), "minimum": (("a", "b"), {}, sp.Min),
    "clamp": (("x", "min", "max"), {"min": None, "max": None}, _clamp),
    "lerp": (("a", "b", "weight"), {}, lambda a, b, w: a + w * (b - a)),
    "addcmul": (("t", "a", "b", "value"), {"value": 1}, lambda t, a, b, v: t + v * a * b),
    "addcdiv": (("t", "a", "b", "value"), {"value": 1}, lambda t, a, b, v: t + v * a / b),
}  # fmt: skip


class RuleError(ValueError):
    """What is wrong with a rule; RuleFailure adds the file and the rule id."""


@dataclass(frozen=True)
class SymbolSpec:
    name: str
    symbol: sp.Symbol
    assumptions: tuple[str, ...]
    range: tuple[float, float]  # closed interval sampled by the numeric check

    def allows(self, x: float) -> bool:
        return all(_SIGN[a](x) for a in self.assumptions if a in _SIGN)


@dataclass(frozen=True)
class ProofReport:
    method: str  # sympy step that reached 0: structural, expand, cancel or simplify
    checked: int  # points where both sides agree
    skipped: int  # points outside the condition or outside the domain of `before`
    seconds: float
    cached: bool = False


@dataclass(frozen=True)
class Rule:
    id: str
    summary: str
    symbols: Mapping[str, SymbolSpec] = field(hash=False)
    before: sp.Expr  # as written: may use `substitute` names (as real symbols)
    after: sp.Expr
    condition: Any  # sympy Boolean; sp.true when unconditional
    exact: bool  # bitwise-equal values in IEEE arithmetic (+0 and -0 count as equal)
    source: str
    substitute: Mapping[str, sp.Expr] = field(hash=False)  # definitions in `symbols` only
    text: Mapping[str, str] = field(hash=False)  # before/after/condition as written
    proof: ProofReport | None = field(default=None, compare=False)

    def expand(self, expr: Any) -> Any:
        """`expr` with the `substitute` names replaced by their definitions."""
        return expr.xreplace({sp.Symbol(k, real=True): v for k, v in self.substitute.items()})

    @property
    def before_in_symbols(self) -> sp.Expr:
        return self.expand(self.before)

    @property
    def after_in_symbols(self) -> sp.Expr:
        return self.expand(self.after)


def translate(src: object, part: str, names: Mapping[str, Any]) -> Any:
    """ast -> sympy through the whitelist; anything else raises RuleError naming the construct."""

    def fail(n: ast.AST, what: str) -> RuleError:
        at = f"col {getattr(n, 'col_offset', 0)}"
        return RuleError(f"in `{part}` {at}: {what}: `{ast.unparse(n)}`")

    def node(n: ast.expr) -> Any:
        value = n.value if isinstance(n, ast.Constant) else None
        if type(value) is int:  # not bool: True is no number here
            return sp.Integer(value)
        if type(value) is float:  # exact decimal meaning: 0.1 is 1/10
            if not math.isfinite(value):
                raise fail(n, "non-finite number")
            return sp.Rational(repr(value))
        if isinstance(n, ast.Name):
            if n.id in names:
                return names[n.id]
            if n.id in ("true", "false") and part == "condition":
                return sp.true if n.id == "true" else sp.false
            raise fail(n, f"name '{n.id}' is not declared in `symbols` or `substitute`")
        if isinstance(n, ast.UnaryOp | ast.BinOp | ast.BoolOp) and type(n.op) in _OPS:
            kids = [n.operand] if isinstance(n, ast.UnaryOp) else getattr(n, "values", [])
            vals = [node(k) for k in kids or [n.left, n.right]]  # type: ignore[union-attr]
            big = vals[0].is_Number and abs(vals[0]) > 10**6  # keeps sympy's integers small
            if isinstance(n.op, ast.Pow) and vals[1].is_Number and (abs(vals[1]) > 64 or big):
                raise fail(n, "power too large (exponent > 64 or numeric base > 1e6)")
            return _OPS[type(n.op)](*vals)
        if isinstance(n, ast.Compare) and all(type(o) in _OPS for o in n.ops):
            t = [node(n.left), *map(node, n.comparators)]
            return sp.And(*(_OPS[type(o)](a, b) for o, a, b in zip(n.ops, t, t[1:], strict=False)))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _FUNCS:
            params, defaults, meaning = _FUNCS[n.func.id]
            if len(n.args) > len(params) or any(k.arg not in params for k in n.keywords):
                raise fail(n, f"bad arguments; {n.func.id} takes ({', '.join(params)})")
            args = {**defaults, **dict(zip(params, map(node, n.args), strict=False))}
            args.update({str(k.arg): node(k.value) for k in n.keywords})
            if missing := [p for p in params if p not in args]:
                raise fail(n, f"missing argument(s) {', '.join(missing)} of {n.func.id}")
            return meaning(*(args[p] for p in params))
        if isinstance(n, ast.Call):
            allowed = ", ".join(sorted(_FUNCS))
            raise fail(n, f"function '{ast.unparse(n.func)}' is not whitelisted ({allowed})")
        kind = {ast.Attribute: "attribute access", ast.Constant: "non-numeric constant"}
        what = getattr(n, "op", n)
        raise fail(n, f"unsupported {kind.get(type(n), type(what).__name__)}")

    if not isinstance(src, str) or len(src) > 2000:
        raise RuleError(f"`{part}` must be a string of at most 2000 characters")
    try:
        out = node(ast.parse(src.strip(), mode="eval").body)
    except SyntaxError as exc:
        raise RuleError(f"in `{part}` col {exc.offset}: syntax error: {exc.msg}") from None
    except RuleError:
        raise
    except (RecursionError, TypeError, ValueError, AttributeError) as exc:  # e.g. 1 + (a < b)
        raise RuleError(f"in `{part}`: ill-formed expression ({exc!r})") from None
    if out.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise RuleError(f"in `{part}`: undefined constant (e.g. 1/0): {out}")
    if (part == "condition") != (isinstance(out, Boolean) and not isinstance(out, sp.Expr)):
        raise RuleError(f"`{part}` is not a {'condition' if part == 'condition' else 'value'}")
    return out


def _symbol_spec(name: str, raw: object) -> SymbolSpec:
    table = {"assume": raw} if isinstance(raw, str) else raw
    if not isinstance(table, dict) or set(table) - {"assume", "range"}:
        raise RuleError(f"symbol '{name}' must be \"assumptions\" or {{assume, range}}")
    words = table.get("assume", "real")
    words = words.replace(",", " ").split() if isinstance(words, str) else list(words)
    if bad := [w for w in words if w != "real" and w not in _SIGN]:
        raise RuleError(f"symbol '{name}': unknown assumption(s) {bad}")
    lo = 0.0 if {"positive", "nonnegative"} & set(words) else -3.0
    lo, hi = table.get("range", (lo, 0.0 if {"negative", "nonpositive"} & set(words) else 3.0))
    if not (isinstance(lo, int | float) and isinstance(hi, int | float) and lo < hi):
        raise RuleError(f"symbol '{name}': range must be [lo, hi] with lo < hi")
    flags = {w: True for w in words if w != "real"}
    spec = SymbolSpec(name, sp.Symbol(name, real=True, **flags), tuple(words), (lo, hi))
    if not any(spec.allows(x) for x in (lo, hi, (lo + hi) / 2)):
        raise RuleError(f"symbol '{name}': range {[lo, hi]} contradicts {words}")
    return spec


def parse_rule(raw: Mapping[str, Any], source: str) -> Rule:
    """A Rule from one [[rule]] table (not yet proved); RuleError says what is wrong."""
    rid = raw.get("id")
    if not isinstance(rid, str) or not rid:
        raise RuleError("a rule without a string `id`")
    if extra := set(raw) - _KEYS:
        raise RuleError(f"unknown key(s) {sorted(extra)}")
    types = {"summary": str, "before": str, "after": str, "condition": str, "exact": bool}
    if bad := [k for k, t in types.items() if type(raw.get(k)) is not t]:
        raise RuleError(f"missing or mistyped key(s) {bad} (exact is a bool, others str)")
    syms, subs_raw = raw.get("symbols"), raw.get("substitute", {})
    if not isinstance(syms, dict) or not syms or not isinstance(subs_raw, dict):
        raise RuleError("`symbols` (a table) is required; `substitute` must be a table")
    symbols = {n: _symbol_spec(n, v) for n, v in syms.items()}
    names: dict[str, Any] = {n: s.symbol for n, s in symbols.items()}
    subs: dict[str, sp.Expr] = {}
    for name, text in subs_raw.items():  # each may use the symbols and earlier definitions
        if name in names:
            raise RuleError(f"substitute '{name}' shadows another name")
        expr = translate(text, f"substitute.{name}", names)
        subs[name] = expr.xreplace({sp.Symbol(k, real=True): v for k, v in subs.items()})
        names[name] = sp.Symbol(name, real=True)
    parts = {k: translate(raw[k], k, names) for k in ("before", "after", "condition")}
    if parts["condition"] == sp.false:
        raise RuleError("condition is always false")
    text = {k: raw[k] for k in parts}
    before, after, cond = parts.values()
    return Rule(
        rid, raw["summary"].strip(), symbols, before, after, cond, raw["exact"], source, subs, text
    )
