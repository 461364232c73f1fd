"""The proof of one rule: (1) sympy reduces before - after to 0 with the condition's sign facts
added to the assumptions, (2) every division, sqrt and log that `after` adds is defined there,
(3) both sides agree at >= MIN_POINTS sample points, evaluated in mpmath at 40 digits."""

from __future__ import annotations

import hashlib
import operator as op
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import mpmath
import sympy as sp

from gsr_rewrite.rulebook.parser import Rule, RuleError, SymbolSpec, translate

MIN_POINTS = 20  # numeric agreement required at this many points inside the condition
RTOL = 1e-9
_DPS = 40  # digits of the numeric check: a true identity disagrees by ~1e-38, far below RTOL
_FACTS = {  # condition atom `x OP 0` -> sympy assumption on x
    "!=": "nonzero", ">": "positive", "<": "negative", ">=": "nonnegative", "<=": "nonpositive",
}  # fmt: skip


def _refinements(cond: Any) -> dict[sp.Symbol, dict[str, bool]]:
    """Sign facts from the top-level atoms `x != 0`, `x > 0`, `0 <= x`, ... of a condition."""
    out: dict[sp.Symbol, dict[str, bool]] = {}
    for atom in sp.And.make_args(cond):
        rel = atom.reversed if isinstance(atom, sp.Rel) and atom.lhs.is_Number else atom
        if not (isinstance(rel, sp.Rel) and isinstance(rel.lhs, sp.Symbol)):
            continue
        if fact := _FACTS.get(rel.rel_op) if rel.rhs == 0 else None:
            out.setdefault(rel.lhs, {})[fact] = True
    return out


def _guards(expr: Any) -> set[tuple[str, Any]]:
    """Partial operations in `expr`: (what their argument must be, the argument)."""
    out = set()
    for e in sp.preorder_traversal(expr):
        if isinstance(e, sp.Pow) and e.exp.is_negative:
            out.add(("nonzero", e.base))
        if isinstance(e, sp.Pow) and e.exp.is_Rational and not e.exp.is_Integer:
            out.add(("nonnegative", e.base))
        if isinstance(e, sp.log):
            out.add(("positive", e.args[0]))
    return out


def _as_written(rule: Rule, part: str) -> Any:
    """`part` translated without sympy's automatic simplification."""
    names = {n: s.symbol for n, s in rule.symbols.items()}
    names |= {k: sp.Symbol(k, real=True) for k in rule.substitute}
    with sp.evaluate(False):
        return translate(rule.text[part], part, names)


_STEPS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("expand", sp.expand),
    ("cancel", lambda d: sp.cancel(sp.together(d))),
    ("simplify", sp.simplify),
)


_MP: dict[type, Callable[..., Any]] = {
    sp.Add: lambda *x: mpmath.fsum(x), sp.Mul: lambda *x: mpmath.fprod(x), sp.Pow: op.pow,
    sp.Abs: mpmath.fabs, sp.sign: mpmath.sign, sp.exp: mpmath.exp, sp.log: mpmath.log,
    sp.Max: max, sp.Min: min, sp.And: lambda *x: all(x), sp.Or: lambda *x: any(x),
    sp.Not: op.not_, sp.Eq: op.eq, sp.Ne: op.ne, sp.Lt: op.lt, sp.Le: op.le, sp.Gt: op.gt,
    sp.Ge: op.ge, type(sp.true): lambda: True, type(sp.false): lambda: False,
}  # fmt: skip


def _mp(e: Any, env: Mapping[sp.Symbol, Any]) -> Any:
    """Evaluate a sympy tree with mpmath reals: a tree walk, nothing is eval'd."""
    if e.is_Symbol:
        return env[e]
    if e.is_Rational:
        return mpmath.mpf(e.p) / e.q
    if e.is_number and not e.args:  # pi, E, Float
        return mpmath.mpf(str(sp.N(e, _DPS)))
    a = [_mp(x, env) for x in e.args]
    if (e.is_Pow and a[0] < 0 and not e.exp.is_Integer) or (isinstance(e, sp.log) and a[0] <= 0):
        raise ValueError("domain")  # sqrt(-1), log(0): NaN or -inf in float code
    return _MP[type(e)](*a)


def _value(expr: Any, env: Mapping[sp.Symbol, Any]) -> Any:
    """`expr` at a point; None where float code would give NaN or inf."""
    try:
        v = _mp(expr, env)
    except (ValueError, ZeroDivisionError):
        return None
    return v if isinstance(v, bool) or mpmath.isfinite(v) else None


def _sample_points(rule: Rule) -> Iterator[dict[str, float]]:
    """24 random points in the declared ranges, then each symbol at its edges 0, ±1, lo, hi."""
    rng = random.Random(hashlib.sha256(rule.id.encode()).digest())
    specs = list(rule.symbols.values())

    def draw(s: SymbolSpec) -> float:
        return next(x for x in (rng.uniform(*s.range) for _ in range(1000)) if s.allows(x))

    for _ in range(24):
        yield {s.name: draw(s) for s in specs}
    for s in specs:
        for x in sorted({*s.range, 0.0, 1.0, -1.0}):
            if s.range[0] <= x <= s.range[1] and s.allows(x):
                yield {**{t.name: draw(t) for t in specs}, s.name: x}


def _numeric_check(rule: Rule) -> tuple[int, int]:
    """(points checked, points skipped); raises RuleError on disagreement or undefined `after`."""
    before, after = rule.before_in_symbols, rule.after_in_symbols
    checked = skipped = 0
    with mpmath.workdps(_DPS):
        for pt in _sample_points(rule):
            env = {rule.symbols[k].symbol: mpmath.mpf(v) for k, v in pt.items()}
            b = _value(before, env) if _value(rule.condition, env) else None
            if b is None:  # outside the condition or the domain of `before`
                skipped += 1
                continue
            if (a := _value(after, env)) is None:
                raise RuleError(f"`after` is undefined at {pt} where `before` = {b}")
            if abs(a - b) > RTOL * max(abs(a), abs(b)) + mpmath.mpf(10) ** (5 - _DPS):
                raise RuleError(f"numeric check failed at {pt}: before = {b}, after = {a}")
            checked += 1
    if checked < MIN_POINTS:
        raise RuleError(f"only {checked} sample points satisfy the condition (need {MIN_POINTS})")
    return checked, skipped


def prove(rule: Rule) -> dict[str, Any]:
    """Symbolic proof, definedness, numeric check: a JSON-able cache entry."""
    t0 = time.perf_counter()
    try:
        facts = _refinements(rule.condition).items()
        sub = {s: sp.Symbol(s.name, **{**s.assumptions0, **f}) for s, f in facts}
    except ValueError as exc:  # sympy's InconsistentAssumptions
        return {"ok": False, "message": f"condition contradicts the assumptions: {exc}"}
    before, after = rule.before_in_symbols.xreplace(sub), rule.after_in_symbols.xreplace(sub)
    diff, method = before - after, "structural"
    for name, step in _STEPS:  # cheapest first: most rules stop at expand or cancel
        if diff != 0:
            diff, method = step(diff), name
    if diff != 0:
        msg = f"before - after does not simplify to 0 under the condition; residual: {diff}"
        return {"ok": False, "message": msg, "residual": str(diff)}
    # domains: guards come from the forms as written (sympy would cancel x*b2/b2 to x)
    written = {p: _guards(_as_written(rule, p)) for p in ("before", "after")}
    guards = {
        p: {(k, rule.expand(a).xreplace(sub).doit()) for k, a in g} for p, g in written.items()
    }
    conds = {c.xreplace(sub) for c in sp.And.make_args(rule.condition)}
    for kind, arg in sorted(guards["after"] - guards["before"], key=str):
        if getattr(arg, f"is_{kind}") or sp.Ne(arg, 0) in conds:
            continue
        verb = {"nonzero": "divides by", "nonnegative": "takes sqrt of", "positive": "logs"}[kind]
        msg = f"`after` {verb} `{arg}`, which may not be {kind}; add that to `condition`"
        return {"ok": False, "message": msg, "residual": str(arg)}
    try:
        checked, skipped = _numeric_check(rule)
    except RuleError as exc:
        return {"ok": False, "message": str(exc)}
    dt = time.perf_counter() - t0
    return {"ok": True, "method": method, "checked": checked, "skipped": skipped, "seconds": dt}
