"""Translation validation of GSR rewrites: original and R-variant run on symbolic tensors
(`symbolic.SymTensor`) and their results are compared as expressions.

``validate_rewrite`` compares params, ``opt.state``, scalar ``param_groups`` entries and what the
optimizer keeps on ``self``: structural equality, then ``expand``, ``cancel(together())`` and
(small expressions, 1 s budget) ``simplify``.  By default params and state are compared after
step 1, then replaced by fresh symbols, so later steps are proved from an *arbitrary* state
(retried from the initial state if that fails).  A numeric check at random points only picks
whether costlier proofs are tried, and feeds notes.  Limits: uninterpreted functions compare
syntactically (``norm(2g)/2`` is not ``norm(g)``); see `symbolic` for what cannot run.
"""

from __future__ import annotations

import inspect
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sympy
import torch

from gsr_rewrite.proof.elementwise import COUNTERS, num, vec
from gsr_rewrite.proof.snapshot import is_bookkeeping  # what the stress matrix compares, too
from gsr_rewrite.proof.symbolic import SymTensor, arg, const

#: sympy assumptions per role: "param", "grad" or a state key (default ``real=True``)
Assumptions = Mapping[str, Mapping[str, bool]]
_SIMPLIFY_MAX_OPS = 80  # sympy.simplify: ~0.5 s at 15 ops with sign(), minutes at 400
_SIMPLIFY_BUDGET_S = 1.0  # per validate_rewrite; beyond it differences are reported unproved


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
            out.update({f"{key}[{j}]": e for j, e in enumerate(arg(v).ravel())})
        elif isinstance(v, (bool, int, float)):
            out[key] = const(v)
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
    COUNTERS.update(rand=0, uninit=0)
    shapes = shapes or ((numel,),) * n_params
    params = [SymTensor.fresh(torch.empty(shape, device="meta"),
                              vec(_symbolic_param(i, shape, asm), shape))
              for i, shape in enumerate(shapes)]
    split = len(params) - 1 if groups > 1 and len(params) > 1 else len(params)
    opt = optimizer_cls(params[:split], **kwargs)
    if split < len(params):
        _second_group(opt, params[split:])
    out: dict[str, Any] = {}
    for s in range(1, steps + 1):
        for i, p in enumerate(params):
            p.grad = SymTensor.fresh(torch.empty(p.shape, device="meta"), vec(
                [_sym(f"g{i}_{j}_{s}", "grad", asm) for j in range(p.numel())], tuple(p.shape)))
        opt.step()
        if resymbolize and s == 1 and steps > 1:
            out.update({f"after_step1:{k}": v for k, v in _snapshot(params, opt).items()})
            for i, p in enumerate(params):
                p.write(vec(_symbolic_param(i, tuple(p.shape), asm, "_s1"), tuple(p.shape)))
                for key, t in opt.state.get(p, {}).items():
                    if isinstance(t, SymTensor):
                        syms = [_sym(f"{key}{i}_{j}_s1", str(key), asm) for j in range(t.numel())]
                        t.write(vec(syms, tuple(t.shape)))
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
        x, y = num(a[key]), num(b[key])
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
