"""The rule book: algebraic rewrite rules as data (rules/*.toml), proved with sympy when loaded.

A rule claims `before == after` per element wherever its symbols' assumptions and its `condition`
hold. Rule text is parsed with `ast` and translated to sympy through a whitelist, never eval'd.
A rule loads only if (1) sympy reduces before - after to 0 with the condition's sign facts added
to the assumptions, (2) every division, sqrt and log that `after` adds is defined there, and
(3) both sides agree at >= 20 points (random and edge values in the declared ranges; points that
break the condition are skipped) evaluated in mpmath at 40 digits. Results are cached per rule.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import operator as op
import os
import random
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import mpmath
import sympy as sp
from sympy.logic.boolalg import Boolean

PROOF_VERSION = "1"  # bump whenever the proof logic or the function whitelist changes
MIN_POINTS = 20  # numeric agreement required at this many points inside the condition
RTOL = 1e-9
_CACHE_MAX = 2000  # proof entries kept; every edit of a rule adds one
_DPS = 40  # digits of the numeric check: a true identity disagrees by ~1e-38, far below RTOL
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


@dataclass(frozen=True)
class RuleFailure:
    rule_id: str | None  # None for a problem with the whole file
    source: str
    message: str
    residual: str | None = None  # before - after as far as sympy got, when that was the problem

    def __str__(self) -> str:
        who = f"rule '{self.rule_id}'" if self.rule_id else "file"
        return f"{self.source}: {who}: {self.message}"


class RuleBookError(ValueError):
    def __init__(self, failures: list[RuleFailure]) -> None:
        self.failures = failures
        super().__init__("rule book failed to load:\n" + "\n".join(map(str, failures)))


@dataclass
class RuleBook:
    rules: dict[str, Rule]
    failures: list[RuleFailure]

    def get(self, rule_id: str) -> Rule | None:
        return self.rules.get(rule_id)


def _translate(src: object, part: str, names: Mapping[str, Any]) -> Any:
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


def _parse_rule(raw: Mapping[str, Any], source: str) -> Rule:
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
        expr = _translate(text, f"substitute.{name}", names)
        subs[name] = expr.xreplace({sp.Symbol(k, real=True): v for k, v in subs.items()})
        names[name] = sp.Symbol(name, real=True)
    parts = {k: _translate(raw[k], k, names) for k in ("before", "after", "condition")}
    if parts["condition"] == sp.false:
        raise RuleError("condition is always false")
    text = {k: raw[k] for k in parts}
    before, after, cond = parts.values()
    return Rule(
        rid, raw["summary"].strip(), symbols, before, after, cond, raw["exact"], source, subs, text
    )


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
        return _translate(rule.text[part], part, names)


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


def _prove(rule: Rule) -> dict[str, Any]:
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


def cache_path() -> Path:
    """$GSR_REWRITE_CACHE_DIR/rule-proofs.json, default ~/.cache/gsr-rewrite/rule-proofs.json."""
    root = os.environ.get("GSR_REWRITE_CACHE_DIR") or Path.home() / ".cache" / "gsr-rewrite"
    return Path(root) / "rule-proofs.json"


def _cache_key(raw: Mapping[str, Any]) -> str:
    blob = json.dumps(raw, sort_keys=True, default=str) + sp.__version__ + PROOF_VERSION
    return hashlib.sha256(blob.encode()).hexdigest()


def _entry_ok(v: dict[str, Any]) -> bool:
    if v.get("ok") is True:
        return {"method", "checked", "skipped", "seconds"} <= v.keys()
    return v.get("ok") is False and isinstance(v.get("message"), str)


def _read_cache() -> dict[str, dict[str, Any]]:
    try:
        entries = json.loads(cache_path().read_text())["entries"]
        return {k: v for k, v in entries.items() if isinstance(v, dict) and _entry_ok(v)}
    except (OSError, ValueError, LookupError, TypeError, AttributeError):
        return {}  # missing or corrupted: the next write replaces it


def _write_cache(entries: Mapping[str, Any]) -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump({"proof_version": PROOF_VERSION, "entries": entries}, f)
        os.replace(f.name, path)  # atomic: readers see the old file or the new one, never half
    except OSError:
        pass  # the cache only saves time


_Paths = str | Path | Iterable[str | Path] | None  # files or folders of *.toml


def _rule_files(paths: _Paths) -> list[tuple[str, str]]:
    """(source, text) of each *.toml in `paths` (files or folders), default gsr_rewrite.rules."""
    if isinstance(paths, str | Path):
        paths = [paths]
    if paths is None:
        try:
            pkg: Any = resources.files("gsr_rewrite.rules")
        except ModuleNotFoundError:  # not installed: use the repository layout
            pkg = Path(__file__).resolve().parents[2] / "rules"
        items = sorted((e for e in pkg.iterdir() if e.name.endswith(".toml")), key=lambda e: e.name)
        return [(str(e), e.read_text(encoding="utf-8")) for e in items]
    files = [f for p in map(Path, paths) for f in (sorted(p.glob("*.toml")) if p.is_dir() else [p])]
    return [(str(f), f.read_text(encoding="utf-8")) for f in files]


def load_rulebook(
    paths: _Paths = None, *, strict: bool = False, use_cache: bool = True
) -> RuleBook:
    """Parse and prove every rule; rules that fail are left out and listed in `.failures`.

    A TOML file without a top-level `rule` key is not a rule file (e.g. the op catalog) and is
    skipped. `strict=True` raises RuleBookError listing every failure instead.
    """
    cache = _read_cache() if use_cache else {}
    fresh: dict[str, dict[str, Any]] = {}
    book = RuleBook({}, [])
    for source, text in _rule_files(paths):
        try:
            tables = tomllib.loads(text).get("rule", [])
        except tomllib.TOMLDecodeError as exc:
            book.failures.append(RuleFailure(None, source, f"invalid TOML: {exc}"))
            continue
        if not (isinstance(tables, list) and all(isinstance(t, dict) for t in tables)):
            book.failures.append(RuleFailure(None, source, "`rule` must be an array of tables"))
            continue
        for raw in tables:
            try:
                rule = _parse_rule(raw, source)
                if rule.id in book.rules:
                    raise RuleError(f"duplicate id (first in {book.rules[rule.id].source})")
            except RuleError as exc:
                rid = raw.get("id") if isinstance(raw.get("id"), str) else None
                book.failures.append(RuleFailure(rid, source, str(exc)))
                continue
            key = _cache_key(raw)
            if (entry := cache.get(key)) is None:
                entry = fresh[key] = {"id": rule.id, **_prove(rule)}
            if not entry["ok"]:
                msg, residual = str(entry.get("message")), entry.get("residual")
                book.failures.append(RuleFailure(rule.id, source, msg, residual))
                continue
            stats = {k: entry[k] for k in ("method", "checked", "skipped", "seconds")}
            proof = ProofReport(**stats, cached=key not in fresh)
            book.rules[rule.id] = replace(rule, proof=proof)
    if use_cache and fresh:
        _write_cache(dict(list({**cache, **fresh}.items())[-_CACHE_MAX:]))  # newest last
    if strict and book.failures:
        raise RuleBookError(book.failures)
    return book


def format_rules_table(book: RuleBook) -> str:
    """A fixed-width table for `gsr-rewrite rules list` (print `book.failures` separately)."""
    rows = [("ID", "CONDITION", "EXACT", "FILE", "SUMMARY")]
    for r in book.rules.values():
        rows.append(
            (r.id, r.text["condition"], "yes" if r.exact else "no", Path(r.source).name, r.summary)
        )
    width = [*(max(len(row[i]) for row in rows) for i in range(4)), 0]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, width, strict=True)).rstrip() for row in rows
    ]
    lines.append(f"{len(book.rules)} rules proved, {len(book.failures)} failed")
    return "\n".join(lines)


def check_rulebook(paths: _Paths = None) -> tuple[bool, str]:
    """Re-prove every rule without the cache (`gsr-rewrite rules check`): (all ok, report)."""
    t0 = time.perf_counter()
    book = load_rulebook(paths, use_cache=False)
    lines = []
    for r in book.rules.values():
        p = r.proof or ProofReport("?", 0, 0, 0.0)
        stats = f"{p.checked} points agree, {p.skipped} skipped"
        lines.append(f"ok      {r.id}  ({p.method}; {stats}; {p.seconds * 1000:.0f} ms)")
    lines += [f"FAILED  {f}" for f in book.failures]
    dt = time.perf_counter() - t0
    versions = f"sympy {sp.__version__}, proof logic v{PROOF_VERSION}"
    lines.append(
        f"{len(book.rules)} proved, {len(book.failures)} failed in {dt:.2f} s ({versions})"
    )
    return not book.failures, "\n".join(lines)
