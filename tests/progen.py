"""Random optimizer step programs for the property tests of gsr-rewrite
(tests/pipeline/test_properties.py).

`generate(seed)` returns the source of a module with one `torch.optim.Optimizer` subclass,
`GenOpt`, whose `step()` is a small random composition (5-15 statements) of per-element torch
ops over the parameter, its gradient and one to three state buffers, in one of two styles, each
either inside `step` or in a module-level helper `_gen_update(group, params, grads, ...)` that
step calls with the lists it built (the `_single_tensor_adam` / `_multi_tensor_adam` layout; the
loop helper walks its lists with zip, enumerate or range(len(...))):

- "loop":    `for p in group["params"]: ...` with Python operators (scalars on either side, unary
             minus, `**`), tensor methods and `torch.*` functions on single tensors;
- "foreach": lists built in step, then `torch._foreach_*` ops, out-of-place and in-place.

What varies: states (zeros_like / ones_like / a clone of the gradient; momentum-like, second
moment-like, previous gradient overwritten last with `copy_`), their updates (in-place chains
`m.mul_(b).add_(g, alpha=..)`, `lerp_`, `addcmul_`, `out=` forms, full overwrites `copy_` /
`zero_`, or, in the loop style, a new tensor stored back: `state["m"] = m`), temporaries named or
nested inline (up to three ops deep), in-place ops and augmented assignments on them, rebinding
(`u = u.clamp(-1, 1)`), accumulators (`torch.zeros_like(g)` / `clone()` then `add_`), norms,
`torch.where`, conditionals on hyperparameters (`if group["flag_a"]:` with a different temporary
in each branch, one-armed rebinding or in-place updates, `x = a if c else b`), maximize
(`grad = -grad`), L2 weight decay (`grad = grad.add(p, alpha=wd)`) or decay of the params, the
gradient changed in place by the original itself, second names for the gradient or a state
(`.detach()`, `.data`, `view_as`, `list(grads)`), `p.grad` read next to `grad`, a closure, and
where the gradient is read last (early, at the very end, or on one path only).

Design: every random decision goes through a small `Chooser` (`integer`, `choice`, `coin`).
Two choosers drive the same builder:

- `RandomChooser(seed)` wraps `random.Random(seed)`: the CI run walks a fixed range of seeds, so
  a run is deterministic, cheap (no hypothesis bookkeeping per program), and every program is
  reproducible from its seed alone (`python tests/progen.py SEED` prints it);
- `HypothesisChooser(data)` draws each decision from a hypothesis `st.data()` object, so a
  failing program is *shrunk* by hypothesis: integers shrink to their lower bound (fewer
  statements, shallower expressions), choices to the first option, coins to False (no optional
  feature).

Programs are valid and numerically tame by construction: every tensor value carries a sign
class, real ⊇ nonneg ⊇ pos ("pos" means bounded away from zero, >= about 0.1 for the first
steps). `sqrt` only takes nonneg values, divisors are pos (`x.abs() + 1`, `v.sqrt() + eps` with
eps = 0.1, a state initialised with ones and only grown by nonneg terms), and conditionals merge
the classes of their branches. Expressions are at most three ops deep, so values stay finite
over the few steps the checks run; the test measures that (the share of programs whose original
trajectory stays finite).

Every program ends by updating the params from computed temporaries (each temporary not read yet
is consumed there), optionally followed by a last read of the gradient (`p.add_(grad, ...)`) and
the overwrite of a previous-gradient state (`prev_grad.copy_(grad)`).

Constructs (CONSTRUCTS; `Program.features` lists those a program has). Half of the programs have
none: a first coin decides, so a shrunk program loses them all; the other half one or more, each
by its own coin. They are the objects, calls and control flow a default-deny analysis must not be
fooled by; their lines do not count in the 5-15 statements:

- "self_log":     `self.log.append(x)` (x a temporary or the gradient, no copy, or a copy;
                  `self.log = []` in __init__), sometimes bounded (`self.log.pop(0)`); in the
                  helper styles, `self.log.append(grads)` in step before or after the call;
- "self_prev":    `self.prev[p] = x` (foreach: `for q, u in zip(params, xs)`), and sometimes a
                  read `self.prev[p] * 0.5 if p in self.prev else torch.zeros_like(p)`;
- "state_hist":   `state.setdefault("hist", [])` or `deque(maxlen=2)` in state, appended to
                  directly or through `hist = state.setdefault(...)`, maybe popped, maybe read
                  back (`torch.stack(list(hist)).mean(0)`, `hist[0] * 0.5`); in the foreach and
                  helper styles in the collecting loop, with `p.grad` (or a copy);
- "helper_fn":    `_direction(g, m)` returning a temporary (or an alias of its argument), as a
                  module-level function, a method or a staticmethod; sometimes two calls in a row;
- "try_raise":    try/except around the body (or around the param loop / helper call), with
                  `if group["flag_a"]: raise _GenSkip()` (a custom exception, or ValueError;
                  raised only under a flipped flag, or never: `group["flag_b"] and beta1 < 0`,
                  or from the third param on: `p.numel() > 20`) at a statement boundary, and a
                  handler that reads the gradient(s) (and may count `self.fallbacks += 1`);
- "getattr_grad": `grad = getattr(p, "grad", None)` in place of `p.grad`;
- "minmax":       builtin max/min over hyperparameters (`lr = min(group["lr"], 1.0)`) and over a
                  0-d tensor (`x / max(y.norm(), 1.0)`), element-wise `torch.max(a, b)` /
                  `torch.min(a, b)`, and the reduction `torch.max(t)` (of a tensor that holds a
                  1 besides `|y|`, so that it is never empty);
- "next_iter":    `first = next(iter(group["params"]))` (or `next(iter(grads))`), whose
                  gradient's norm scales the update: `fscale = 1 / (float(first.grad.norm()) + 1)`;
- "super_call":   the class derives from `_GenBase(Optimizer)` defined in the module, whose method
                  step calls through `super()` (or `self`): `_record(t)` keeps its tensor
                  (`self.recorded = t`), reads it (`self.total += float(t.sum())`), or appends its
                  norm to a list made by the base's __init__; `_scaled(t)` returns a new tensor;
- "other_grads":  other params' gradients read from inside the per-param loop: the previous one
                  (`group["params"][i - 1].grad`, `grads[i - 1]`) or a global norm of all of them
                  (`clip = min(1.0, 1.0 / (total + 1e-6))`), used as a scalar; or the global norm
                  before the loop (a safe read) or after the update (`self.grad_norm = ...`);
- "tensor_lr":    `lr` is a 0-d tensor group option (`lr=torch.tensor(float(lr))` in the
                  defaults), used wherever torch 2.x takes it (`alpha=-lr`, `lr * u`), never as a
                  positional foreach scalar.

Programs with constructs stay valid under every configuration the checks use (a duplicated
param, two param groups, bf16, overlapping grads): scalars read from gradients are norms (an
empty tensor has norm 0), never maxima.

ALIASES and FUNCTIONAL_STATE switch off the two program features that found the bugs listed next
to them, NEW_CONSTRUCTS all of the constructs; the test keeps them on. Turning them off (in every
process that generates) helps tell a regression of those from a new kind of bug.
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

CLASS_NAME = "GenOpt"
#: False: no second names for a buffer made mid-step (`g = grad.detach()`, `x = a if c else m`).
#: These programs found a liveness bug (contents read through a name bound after the reuse point).
ALIASES = True
#: False: no state rebound to a new tensor mid-step (`m = m.mul(b).add(g); state["m"] = m`). These
#: found a second bug (the new state buffer was used as scratch after its last write).
FUNCTIONAL_STATE = True
#: False: none of the CONSTRUCTS below (the programs of the first generator only).
NEW_CONSTRUCTS = True
#: boolean hyperparameters of every generated class, with their defaults
FLAGS = {"maximize": False, "flag_a": False, "flag_b": True}

#: The optional constructs (see "Constructs" in the module docstring), each with the styles that
#: can have it. Half of the programs get none; the other half one or more, each independently.
CONSTRUCTS: dict[str, tuple[str, ...]] = {
    "self_log": ("loop", "foreach", "loop-helper", "foreach-helper"),
    "self_prev": ("loop", "foreach"),
    "state_hist": ("loop", "foreach", "loop-helper", "foreach-helper"),
    "helper_fn": ("loop", "foreach", "loop-helper", "foreach-helper"),
    "try_raise": ("loop", "foreach", "loop-helper", "foreach-helper"),
    "getattr_grad": ("loop", "foreach", "loop-helper", "foreach-helper"),
    "minmax": ("loop", "foreach", "loop-helper", "foreach-helper"),
    "next_iter": ("loop", "foreach", "loop-helper", "foreach-helper"),
    "super_call": ("loop", "foreach", "loop-helper", "foreach-helper"),
    "other_grads": ("loop", "foreach", "loop-helper", "foreach-helper"),
    "tensor_lr": ("loop", "foreach", "loop-helper", "foreach-helper"),
}
#: constructs that keep a tensor made in an earlier step somewhere and drop it later (a bounded
#: list, a deque with maxlen, `self.prev[p] = ...`, `self.recorded = t`): see frees_old_state
_KEEPS_OLD = {"self_log", "self_prev", "state_hist", "super_call"}

# helpers that return a temporary (or, marked False, an alias of an argument): (body, fresh)
HELPERS_LOOP = [
    ("return m.mul(2) - g", True),
    ("d = m.clone()\nd.add_(g, alpha=-0.5)\nreturn d", True),
    ("return torch.where(m * g > 0, m, g * 0.5)", True),
    ("m2 = m * 0.5\nreturn m2.add_(g)", True),
    ("return g.view_as(g)", False),
]
HELPERS_FOREACH = [
    ("return torch._foreach_sub(torch._foreach_mul(m, 2), g)", True),
    ("d = torch._foreach_mul(m, 1.0)\ntorch._foreach_add_(d, g, alpha=-0.5)\nreturn d", True),
    ("return [x.mul(2) - y for x, y in zip(m, g)]", True),
    ("return list(g)", False),
]
# methods of the base class `_GenBase` that step reaches through `super()` (or `self`):
# (kind, body); "record" keeps or reads its tensor argument, "scaled" returns a new tensor
BASE_METHODS = [
    ("record", "self.recorded = t"),
    ("record", "self.total = getattr(self, \"total\", 0.0) + float(t.sum())"),
    ("record", "self.norms.append(t.norm())"),
    ("scaled", "return t.mul(0.5)"),
]


# -- choosers ---------------------------------------------------------------------------------
class Chooser(Protocol):
    def integer(self, lo: int, hi: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...

    def coin(self, p: float) -> bool: ...


class RandomChooser:
    """Decisions from a seeded `random.Random`: the same seed gives the same program."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def coin(self, p: float) -> bool:
        return self.rng.random() < p


class HypothesisChooser:
    """Decisions drawn from hypothesis `st.data()`; shrinking moves to lo, the first option,
    and `False` for every coin."""

    def __init__(self, data: Any) -> None:
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def integer(self, lo: int, hi: int) -> int:
        return int(self.data.draw(self.st.integers(lo, hi)))

    def choice(self, options: Sequence[T]) -> T:
        return options[self.integer(0, len(options) - 1)]

    def coin(self, p: float) -> bool:
        return self.integer(0, 99) >= 100 - round(100 * p)


# -- sign classes -----------------------------------------------------------------------------
REAL, NONNEG, POS = "real", "nonneg", "pos"
_ORDER = {POS: 0, NONNEG: 1, REAL: 2}


def fits(kind: str, need: str) -> bool:
    return _ORDER[kind] <= _ORDER[need]


def meet(a: str, b: str) -> str:
    """The class of a value that is `a` on one path and `b` on another."""
    return a if _ORDER[a] >= _ORDER[b] else b


def _transfer(rule: str, kind: str) -> str:
    """The class after an op given by `rule` on a value of class `kind`."""
    if rule == "keep":
        return kind
    if rule == "lift":  # + a positive margin: nonneg -> pos
        return POS if kind in (NONNEG, POS) else REAL
    if rule == "abs":  # |x|, max(x, nonneg): at least nonneg
        return kind if kind == POS else NONNEG
    return rule


# -- templates --------------------------------------------------------------------------------
# Placeholders: {r} {n} {p} a real / nonneg / pos sub-expression, parenthesised when it is not
# atomic; {R} {N} {P} the same, bare (argument position); {x} {X} one real sub-expression used
# twice; {s} a nonzero scalar, {q} a positive scalar, {w} a weight in (0, 1), {c} a positive
# margin, {b} a beta; {S} the state being updated; {T} the temporary being updated.
@dataclass(frozen=True)
class Tpl:
    text: str
    atomic: bool = True  # a call: needs no parentheses as an operand
    rule: str = "keep"  # class transfer for in-place and rebinding templates


def _top_level_operator(text: str) -> bool:
    """True when `text` has a binary operator or a leading minus outside any brackets."""
    depth = 0
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and (text.startswith(" + ", i) or text.startswith(" - ", i) or
                           text.startswith(" * ", i) or text.startswith(" / ", i) or
                           text.startswith(" ** ", i) or text.startswith(" if ", i)):
            return True
    return text.startswith("-")


def _t(*texts: str) -> list[Tpl]:
    return [Tpl(t, atomic=not _top_level_operator(t.replace("{", "(").replace("}", ")")))
            for t in texts]


SCALARS = {
    "s": ["0.5", "2.0", "lr", "beta1", "(1 - beta1)", "-0.5", "3", "beta2"],
    "q": ["0.5", "2.0", "beta1", "(1 - beta2)", "3"],
    "w": ["0.5", "(1 - beta1)", "0.1", "(1 - beta2)"],
    "c": ["1", "eps", "1.0", 'group["eps"]', "0.5"],
    "b": ["beta1", "beta2"],
}

LOOP_EXPR: dict[str, list[Tpl]] = {
    REAL: _t(
        "{r} + {r}", "{r} * {s}", "{r} - {r}", "{r} * {r}", "{r} / {p}", "-{r}", "{s} * {r}",
        "{s} - {r}", "{s} / {p}", "{r} + {s}", "{r}.sign()", "{r}.clamp(-1, 1)", "{r}.tanh()",
        "{r}.mul({s})", "{r}.add({R}, alpha={s})", "{r}.sub({R})", "{r}.div({P})",
        "{r}.lerp({R}, {w})", "{r}.addcmul({R}, {R}, value={s})",
        "{r}.addcdiv({R}, {P}, value={s})", "torch.maximum({R}, {R})",
        "torch.minimum({R}, {R})", "torch.add({R}, {R}, alpha={s})", "torch.mul({R}, {s})",
        "torch.sign({R})", "torch.lerp({R}, {R}, {w})", "torch.where({r} > 0, {R}, {R})",
        "torch.clamp({R}, -1, 1)", "torch.sub({R}, {R})", "torch.div({R}, {P})",
        "{r} / ({r}.norm() + 1)",
    ),
    NONNEG: _t(
        "{r}.abs()", "{x} * {x}", "torch.abs({R})", "{n}.sqrt()", "torch.sqrt({N})",
        "{n} + {n}", "{n} * {q}", "{r}.square()", "torch.square({R})", "{r} ** 2", "{r}.pow(2)",
        "torch.maximum({N}, {R})", "{r}.clamp_min(0.0)", "{r}.clamp(0, 1)",
        "{n}.lerp({N}, {w})",
    ),
    POS: _t(
        "{n} + {c}", "{n}.sqrt().add_({c})", "{c} + {n}", "{n}.add({c})", "{p}.sqrt()",
        "torch.sqrt({P})", "torch.maximum({P}, {R})", "{r}.clamp(-1, 1).exp()", "{p} + {n}",
        "{p} * {q}", "({n}.sqrt() / {q}).add_({c})",
    ),
}
LOOP_BASE = {NONNEG: _t("{r}.abs()", "{x} * {x}"), POS: _t("{r}.abs() + 1", "{x} * {x} + {c}")}

FOREACH_EXPR: dict[str, list[Tpl]] = {
    REAL: _t(
        "torch._foreach_add({R}, {R})", "torch._foreach_mul({R}, {s})",
        "torch._foreach_sub({R}, {R})", "torch._foreach_mul({R}, {R})",
        "torch._foreach_div({R}, {P})", "torch._foreach_add({R}, {R}, alpha={s})",
        "torch._foreach_div({R}, {s})", "torch._foreach_lerp({R}, {R}, {w})",
        "torch._foreach_addcmul({R}, {R}, {R}, value={s})",
        "torch._foreach_addcdiv({R}, {R}, {P}, value={s})", "torch._foreach_maximum({R}, {R})",
        "torch._foreach_minimum({R}, {R})", "torch._foreach_neg({R})",
        "torch._foreach_sign({R})", "torch._foreach_add({R}, {s})",
        "torch._foreach_sub({R}, {R}, alpha={s})", "torch._foreach_addcmul({R}, {R}, {R}, {s})",
        "torch._foreach_div({R}, torch._foreach_add(torch._foreach_norm({R}), 1))",
    ),
    NONNEG: _t(
        "torch._foreach_abs({R})", "torch._foreach_mul({X}, {X})", "torch._foreach_sqrt({N})",
        "torch._foreach_add({N}, {N})", "torch._foreach_maximum({N}, {R})",
        "torch._foreach_pow({R}, 2)", "torch._foreach_mul({N}, {q})",
        "torch._foreach_lerp({N}, {N}, {w})",
    ),
    POS: _t(
        "torch._foreach_add({N}, {c})", "torch._foreach_sqrt({P})",
        "torch._foreach_maximum({P}, {R})", "torch._foreach_exp(torch._foreach_sign({R}))",
        "torch._foreach_add({P}, {N})", "torch._foreach_mul({P}, {q})",
    ),
}
# constructs "minmax": builtin max/min over numbers and 0-d tensors, torch.max/min of two tensors
MINMAX_LOOP_EXPR = {
    REAL: _t("torch.max({R}, {R})", "torch.min({R}, {R})", "{r} / max({r}.norm(), 1.0)",
             "{r} / torch.max(torch.cat([{r}.abs().flatten(), p.new_ones(1)]))"),
    NONNEG: _t("torch.max({N}, {R})", "torch.min({N}, {r}.abs())"),
    POS: _t("torch.max({P}, {R})", "{n} + max(eps, 0.5)"),
}
MINMAX_FOREACH_EXPR = {
    REAL: _t("torch._foreach_mul({R}, min(beta1, 0.5))",
             "torch._foreach_div({R}, max(beta2, 1.0))"),
    NONNEG: _t("torch._foreach_mul({N}, min(beta2, 0.5))"),
    POS: _t("torch._foreach_add({N}, max(eps, 0.5))"),
}
#: templates whose {s} must be a Python number (a positional foreach scalar): no tensor lr there
NEEDS_NUMBER = {"torch._foreach_addcmul({R}, {R}, {R}, {s})"}

FOREACH_BASE = {NONNEG: _t("torch._foreach_abs({R})", "torch._foreach_mul({X}, {X})"),
                POS: _t("torch._foreach_add(torch._foreach_abs({R}), {c})")}

# Updates of a state buffer, by the state's class (each keeps that class). `copy_` and `zero_`
# overwrite every element: the buffer is dead from its last read before them.
_LOOP_NN_UPDATE = ["{S}.mul_({b}).addcmul_({X}, {X}, value=1 - {b})",
                   "torch.maximum({S}, {N}, out={S})", "{S}.copy_(torch.maximum({S}, {N}))",
                   "{S}.mul_({b}).add_({N}, alpha=1 - {b})", "{S}.lerp_({N}, {w})"]
LOOP_STATE_UPDATE = {
    REAL: ["{S}.mul_({b}).add_({R}, alpha=1 - {b})", "{S}.lerp_({R}, {w})",
           "{S}.mul_({b}).add_({R})", "{S}.add_({R}, alpha={s})", "{S}.copy_({S} * {b} + {r})",
           "torch.add({S}, {R}, alpha={s}, out={S})", "{S}.copy_({R})",
           "{S}.zero_()\n{S}.add_({R}, alpha={s})"],
    NONNEG: [*_LOOP_NN_UPDATE, "{S}.copy_({N})"],
    POS: [*_LOOP_NN_UPDATE, "{S}.copy_({P})"],
}
_FOREACH_NN_UPDATE = [
    "torch._foreach_mul_({S}, {b})\ntorch._foreach_addcmul_({S}, {X}, {X}, 1 - {b})",
    "torch._foreach_mul_({S}, {b})\ntorch._foreach_addcmul_({S}, {X}, {X}, value=1 - {b})",
    "torch._foreach_maximum_({S}, {N})", "torch._foreach_lerp_({S}, {N}, {w})"]
FOREACH_STATE_UPDATE = {
    REAL: ["torch._foreach_mul_({S}, {b})\ntorch._foreach_add_({S}, {R}, alpha=1 - {b})",
           "torch._foreach_lerp_({S}, {R}, {w})", "torch._foreach_add_({S}, {R})",
           "torch._foreach_add_({S}, {R}, alpha={s})", "torch._foreach_copy_({S}, {R})",
           "torch._foreach_zero_({S})\ntorch._foreach_add_({S}, {R}, alpha={s})"],
    NONNEG: [*_FOREACH_NN_UPDATE, "torch._foreach_copy_({S}, {N})"],
    POS: [*_FOREACH_NN_UPDATE, "torch._foreach_copy_({S}, {P})"],
}

# In-place updates of a temporary (statements), with their class transfer.
LOOP_TMP_INPLACE = [
    Tpl("{T}.mul_({q})"), Tpl("{T}.add_({c})", rule="lift"), Tpl("{T}.clamp_(-1, 1)"),
    Tpl("{T}.sign_()"), Tpl("{T}.abs_()", rule="abs"), Tpl("{T}.neg_()", rule=REAL),
    Tpl("{T}.div_({P})"), Tpl("{T}.mul_({s})", rule=REAL),
    Tpl("{T}.addcmul_({R}, {R}, value={s})", rule=REAL), Tpl("{T}.add_({R}, alpha={s})", rule=REAL),
    Tpl("{T}.lerp_({R}, {w})", rule=REAL), Tpl("{T} += {r}", rule=REAL),
    Tpl("{T} *= {q}"), Tpl("{T} /= {p}"), Tpl("{T} -= {r}", rule=REAL),
]
LOOP_TMP_SQRT = Tpl("{T}.sqrt_()")  # nonneg temporaries only
FOREACH_TMP_INPLACE = [
    Tpl("torch._foreach_mul_({T}, {q})"), Tpl("torch._foreach_add_({T}, {c})", rule="lift"),
    Tpl("torch._foreach_sign_({T})"), Tpl("torch._foreach_abs_({T})", rule="abs"),
    Tpl("torch._foreach_neg_({T})", rule=REAL), Tpl("torch._foreach_div_({T}, {P})"),
    Tpl("torch._foreach_addcmul_({T}, {R}, {R}, value={s})", rule=REAL),
    Tpl("torch._foreach_add_({T}, {R}, alpha={s})", rule=REAL),
    Tpl("torch._foreach_maximum_({T}, {N})", rule="abs"),
]
FOREACH_TMP_SQRT = Tpl("torch._foreach_sqrt_({T})")

# A temporary rebound to a new value computed from it: `update = update.clamp(-1, 1)`.
LOOP_REBIND = [
    Tpl("{T} * {s}", atomic=False, rule=REAL), Tpl("{T}.clamp(-1, 1)"),
    Tpl("-{T}", atomic=False, rule=REAL), Tpl("{T} / {p}", atomic=False), Tpl("{T}.sign()"),
    Tpl("torch.maximum({T}, {N})", rule="abs"), Tpl("{T} + {r}", atomic=False, rule=REAL),
    Tpl("({T} * {q}).clamp_(-1, 1)"),
]
FOREACH_REBIND = [
    Tpl("torch._foreach_mul({T}, {s})", rule=REAL), Tpl("torch._foreach_sign({T})"),
    Tpl("torch._foreach_neg({T})", rule=REAL), Tpl("torch._foreach_div({T}, {P})"),
    Tpl("torch._foreach_maximum({T}, {N})", rule="abs"),
    Tpl("torch._foreach_add({T}, {R})", rule=REAL),
]

LOOP_FINAL = ["p.add_({U}, alpha=-lr)", "p.sub_({U}, alpha=lr)", "p.sub_(lr * {U})",
              "p.add_({U} * {s}, alpha=-lr)", "p.addcdiv_({U}, {P}, value=-lr)",
              "p.addcmul_({U}, {R}, value=-lr)", "p.data.add_({U}, alpha=-lr)"]
FOREACH_FINAL = ["torch._foreach_add_(params, {U}, alpha=-lr)",
                 "torch._foreach_sub_(params, {U}, alpha=lr)",
                 "torch._foreach_addcdiv_(params, {U}, {P}, value=-lr)",
                 "torch._foreach_addcmul_(params, {U}, {R}, value=-lr)",
                 "torch._foreach_add_(params, torch._foreach_mul({U}, {s}), alpha=-lr)"]

TESTS = ['group["flag_a"]', 'not group["flag_b"]', 'group["flag_b"]',
         'group["weight_decay"] != 0', "beta1 > 0.5"]

LOOP_TMP_NAMES = ["update", "denom", "direction", "diff", "scaled", "ratio", "mix", "corr",
                  "delta", "u", "v_hat", "step_dir", "tmp", "acc", "num"]
STATE_KINDS = {  # state key -> (class, init); prev_grad is the previous gradient
    "exp_avg": (REAL, "zeros"), "momentum_buffer": (REAL, "zeros"),
    "exp_avg_sq": (NONNEG, "zeros"), "max_sq": (NONNEG, "zeros"),
    "precond": (POS, "ones"), "prev_grad": (REAL, "grad"),
}


# -- the builder ------------------------------------------------------------------------------
@dataclass
class Val:
    kind: str
    fresh: bool  # a buffer this program allocated and nobody aliases: in-place ops allowed
    role: str  # grad | param | state | tmp


@dataclass
class Expr:
    code: str
    kind: str
    atomic: bool


@dataclass
class Program:
    seed: int | None
    style: str
    source: str
    flags: list[str] = field(default_factory=list)  # boolean hyperparameters step reads
    statements: int = 0  # statements of the generated body (after the state set-up)
    #: step frees a tensor made before it (a state rebound to a new tensor, the old one dropped)
    frees_old_state: bool = False
    features: list[str] = field(default_factory=list)  # the CONSTRUCTS it has


class _Builder:
    def __init__(self, ch: Chooser, style: str) -> None:
        self.ch, self.style = ch, style
        self.foreach = style.startswith("foreach")
        self.helper = style.endswith("helper")
        self.body: list[str] = []
        self.indent = 0
        self.values: dict[str, Val] = {}
        self.used: set[str] = set()
        self.names = [n + "s" for n in LOOP_TMP_NAMES] if self.foreach else list(LOOP_TMP_NAMES)
        self.expr_tpls = FOREACH_EXPR if self.foreach else LOOP_EXPR
        self.base_tpls = FOREACH_BASE if self.foreach else LOOP_BASE
        self.grad = "grads" if self.foreach else "grad"
        self.param = "params" if self.foreach else "p"
        # -- the CONSTRUCTS (all empty / off unless _program turns them on) --
        self.features: set[str] = set()
        self.scalars = {k: list(v) for k, v in SCALARS.items()}
        self.extra = 0  # body lines of constructs: not counted by size()
        self.group_pre: list[str] = []  # group level, before the param loop / helper call
        self.group_post: list[str] = []  # group level, after it
        self.collect_extra: list[str] = []  # the collecting loop, after the state set-up
        self.module_pre: list[str] = []  # module level, before the class
        self.methods: list[str] = []  # more methods of the class (after __init__)
        self.init_extra: list[str] = []  # __init__, after super().__init__
        self.imports: list[str] = []
        self.hyper: dict[str, str] = {}  # hyperparameter -> its line's right-hand side
        self.base = "Optimizer"
        self.loop_head = 'for p in group["params"]:'
        self.getattr_grad = False
        self.tensor_lr = False
        self.try_outer: tuple[str, list[str]] | None = None  # (except line, handler lines)
        self.helper_call: tuple[str, bool] = ("_direction", True)  # (callee, returns fresh)
        self.base_method: tuple[str, str] = ("record", "")  # a BASE_METHODS entry
        self.loop_form = "zip"  # how a loop helper walks its lists: zip, enumerate, range

    # -- output --------------------------------------------------------------------------
    def emit(self, text: str, extra: bool = False) -> None:
        for line in text.split("\n"):
            self.body.append("    " * self.indent + line)
            self.extra += extra

    def size(self) -> int:
        """Statements emitted so far (an `if` counts, its `else:` does not), constructs not
        counted."""
        return sum(1 for line in self.body if line.strip() != "else:") - self.extra

    def new_name(self) -> str:
        free = [n for n in self.names if n not in self.values]
        return self.ch.choice(free)

    # -- expressions ---------------------------------------------------------------------
    def leaves(self, need: str) -> list[str]:
        out: list[str] = []
        for name, v in self.values.items():
            if not fits(v.kind, need):
                continue
            weight = {"grad": 2, "param": 1, "state": 1, "tmp": 2}[v.role]
            if v.role == "tmp" and name not in self.used:
                weight = 4
            out += [name] * weight
        return out

    def expr(self, need: str, depth: int) -> Expr:
        leaves = self.leaves(need)
        if leaves and (depth <= 0 or self.ch.coin(0.35)):
            name = self.ch.choice(leaves)
            self.used.add(name)
            return Expr(name, self.values[name].kind, True)
        if depth <= 0:  # no value of this class is at hand: make one from real leaves
            return self.fill(self.ch.choice(self.base_tpls[need]), need, 0)
        return self.fill(self.ch.choice(self.expr_tpls[need]), need, depth - 1)

    def fill(self, tpl: Tpl, kind: str, depth: int, **fixed: str) -> Expr:
        twice: dict[str, str] = {}

        def sub(m: re.Match[str]) -> str:
            key = m.group(1)
            if key in fixed:
                return fixed[key]
            if key in self.scalars:
                options = self.scalars[key]
                if self.tensor_lr and tpl.text in NEEDS_NUMBER:
                    options = [o for o in options if "lr" not in o]
                return self.ch.choice(options)
            if key in ("x", "X"):
                if "x" not in twice:
                    e = self.expr(REAL, depth)
                    twice["x"] = e.code if e.atomic else f"({e.code})"
                return twice["x"]
            need = {"r": REAL, "n": NONNEG, "p": POS}[key.lower()]
            e = self.expr(need, depth)
            return e.code if key.isupper() or e.atomic else f"({e.code})"

        return Expr(re.sub(r"\{(\w+)\}", sub, tpl.text), kind, tpl.atomic)

    # -- statements ----------------------------------------------------------------------
    def assign_temp(self, name: str) -> str:
        need = self.ch.choice([REAL, NONNEG, REAL, POS])
        e = self.fill(self.ch.choice(self.expr_tpls[need]), need, self.ch.integer(0, 2))
        self.emit(f"{name} = {e.code}")
        self.values[name] = Val(need, True, "tmp")
        return need

    def temps(self, fresh_only: bool = False) -> list[str]:
        return [n for n, v in self.values.items()
                if v.role == "tmp" and (v.fresh or not fresh_only)]

    def act_temp(self) -> None:
        self.assign_temp(self.new_name())

    def act_state(self, local: str) -> None:
        v = self.values[local]
        table = FOREACH_STATE_UPDATE if self.foreach else LOOP_STATE_UPDATE
        tpl = Tpl(self.ch.choice(table[v.kind]))
        del self.values[local]  # the state takes part only where the template says {S}
        try:
            self.emit(self.fill(tpl, v.kind, self.ch.integer(0, 2), S=local).code)
        finally:
            self.values[local] = v

    def act_inplace(self) -> None:
        fresh = self.temps(fresh_only=True)
        if not fresh:
            return self.act_temp()
        name = self.ch.choice(fresh)
        v = self.values[name]
        options = list(FOREACH_TMP_INPLACE if self.foreach else LOOP_TMP_INPLACE)
        if fits(v.kind, NONNEG):
            options.append(FOREACH_TMP_SQRT if self.foreach else LOOP_TMP_SQRT)
        tpl = self.ch.choice(options)
        self.emit(self.fill(tpl, v.kind, self.ch.integer(0, 1), T=name).code)
        self.values[name] = replace(v, kind=_transfer(tpl.rule, v.kind))

    def act_rebind(self) -> None:
        temps = self.temps()
        if not temps:
            return self.act_temp()
        name = self.ch.choice(temps)
        v = self.values[name]
        tpl = self.ch.choice(FOREACH_REBIND if self.foreach else LOOP_REBIND)
        self.used.add(name)
        e = self.fill(tpl, v.kind, self.ch.integer(0, 1), T=name)
        self.emit(f"{name} = {e.code}")
        self.values[name] = Val(_transfer(tpl.rule, v.kind), True, "tmp")

    def act_accumulate(self) -> None:
        """A temporary made by zeros_like / clone and then filled in place."""
        name = self.new_name()
        if self.foreach:
            start = self.ch.choice([f"torch._foreach_mul({self.grad}, 0.0)",
                                    f"[torch.zeros_like(g) for g in {self.grad}]"])
            self.emit(f"{name} = {start}")
            add = "torch._foreach_add_({T}, {R}, alpha={s})"
        else:
            start = self.ch.choice(["torch.zeros_like({R})", "{r}.clone()", "torch.clone({R})"])
            self.emit(f"{name} = {self.fill(Tpl(start), REAL, 1).code}")
            add = "{T}.add_({R}, alpha={s})"
        self.values[name] = Val(REAL, True, "tmp")
        for _ in range(self.ch.integer(1, 2)):
            self.emit(self.fill(Tpl(add), REAL, 1, T=name).code)

    def act_alias(self) -> None:
        """A second name for the gradient or a state: a view, `.data` or the same list."""
        if not ALIASES:
            return self.act_temp()
        sources = [n for n, v in self.values.items() if v.role in ("grad", "state")
                   and not n.endswith("_view") and n.replace(".", "_") + "_view" not in self.values]
        if not sources:
            return self.act_temp()
        src = self.ch.choice(sources)
        name = src.replace(".", "_") + "_view"
        if self.foreach:
            self.emit(f"{name} = {self.ch.choice([src, f'list({src})'])}")
        else:
            self.emit(f"{name} = {src}{self.ch.choice(['.detach()', '.view_as(p)', '.data'])}")
        self.values[name] = replace(self.values[src], fresh=False)

    def act_grad_inplace(self) -> None:
        """The original itself changes the gradient in place (`d_p.add_(p, alpha=wd)`)."""
        if self.foreach:
            op = self.ch.choice(['torch._foreach_add_(grads, params, alpha=group["weight_decay"])',
                                 "torch._foreach_mul_(grads, 0.5)"])
        else:
            g = "p.grad" if self.grad == "p.grad" else "grad"
            op = self.ch.choice([f'{g}.add_(p, alpha=group["weight_decay"])', f"{g}.mul_(0.5)",
                                 f"{g}.clamp_(-1, 1)", f"{g} += p * 0.1"])
        self.emit(op)

    def act_functional_state(self) -> None:
        """A state rebound to a new tensor and stored back: `state["k"] = exp_avg` (loop only)."""
        states = [n for n, v in self.values.items() if v.role == "state" and n in STATE_KINDS
                  and n != "prev_grad" and v.kind != POS]
        if self.style != "loop" or not states or not FUNCTIONAL_STATE:
            return self.act_temp()
        name = self.ch.choice(states)
        kind = self.values[name].kind
        tpl = self.ch.choice(["{S}.mul({b}).add({R}, alpha=1 - {b})", "{S}.lerp({R}, {w})"]
                             if kind == REAL else ["{S}.mul({b}).addcmul({X}, {X}, value=1 - {b})",
                                                   "torch.maximum({S}, {N})"])
        e = self.fill(Tpl(tpl), kind, self.ch.integer(0, 1), S=name)
        self.emit(f'{name} = {e.code}\nstate["{name}"] = {name}')

    def act_decay(self) -> None:
        wd = 'group["weight_decay"]'
        if self.foreach:
            self.emit(f"torch._foreach_mul_(params, 1 - lr * {wd})")
        else:
            self.emit(f"p.mul_(1 - lr * {wd})")

    def act_cond(self) -> None:
        test = self.ch.choice(TESTS)
        temps, fresh = self.temps(), self.temps(fresh_only=True)
        shapes = ["both_new", "ifexp"] + (["rebind"] if temps else []) + \
            (["inplace"] if fresh else []) + \
            (["state"] if any(v.role == "state" for v in self.values.values()) else [])
        shape = self.ch.choice(shapes)
        if shape == "ifexp":
            name = self.new_name()
            need = self.ch.choice([REAL, NONNEG])
            if ALIASES:
                a, b = (self.expr(need, self.ch.integer(0, 2)) for _ in range(2))
            else:
                a, b = (self.fill(self.ch.choice(self.expr_tpls[need]), need, 1)
                        for _ in range(2))
            wrap = [e.code if e.atomic else f"({e.code})" for e in (a, b)]
            self.emit(f"{name} = {wrap[0]} if {test} else {wrap[1]}")
            aliased = [e.code for e in (a, b) if e.code in self.values]
            for alias in aliased:  # in-place ops on it would now also change `name`
                self.values[alias] = replace(self.values[alias], fresh=False)
            self.values[name] = Val(meet(a.kind, b.kind), not aliased, "tmp")
            return
        self.emit(f"if {test}:")
        before = {k: replace(v) for k, v in self.values.items()}
        self.indent += 1
        if shape == "both_new":
            name = self.new_name()
            self.assign_temp(name)
        elif shape == "rebind":
            self.act_rebind()
        elif shape == "inplace":
            self.act_inplace()
        else:
            state = self.ch.choice([k for k, v in self.values.items() if v.role == "state"])
            self.act_state(state)
        then = self.values
        self.indent -= 1
        self.values = {k: replace(v) for k, v in before.items()}
        if shape == "both_new" or (shape == "state" and self.ch.coin(0.5)):
            self.emit("else:")
            self.indent += 1
            if shape == "both_new":
                self.assign_temp(name)
            else:
                self.act_state(state)
            self.indent -= 1
        merged: dict[str, Val] = {}
        for k, v in self.values.items():
            if k in then:
                w = then[k]
                merged[k] = Val(meet(v.kind, w.kind), v.fresh and w.fresh, v.role)
        self.values = merged

    # -- constructs (CONSTRUCTS): each emits lines that size() does not count ----------------
    def stored(self) -> str:
        """A value to keep in a container or on self: a temporary or the gradient itself (no
        copy), sometimes a copy."""
        name = self.ch.choice([*self.temps(), self.grad, self.grad])
        self.used.add(name)
        if self.ch.coin(0.25):
            return f"[t.clone() for t in {name}]" if self.foreach else f"{name}.clone()"
        return name

    def one_tensor(self) -> str:
        """A single tensor: a temporary or the gradient (in the foreach style, its first)."""
        name = self.ch.choice([*self.temps(), self.grad])
        self.used.add(name)
        return f"{name}[0]" if self.foreach else name

    def add_scalar(self, name: str) -> None:
        """A Python float in (0, 1] computed from data: from here on one of the {s} and {q}."""
        for key in ("s", "q"):
            self.scalars[key].append(name)

    def new_temp(self, code: str, fresh: bool = True) -> str:
        name = self.new_name()
        self.emit(f"{name} = {code}", True)
        self.values[name] = Val(REAL, fresh, "tmp")
        return name

    def con_self_log(self) -> None:
        self.emit(f"self.log.append({self.stored()})", True)
        if self.ch.coin(0.5):
            self.emit("if len(self.log) > 3:\n    self.log.pop(0)", True)

    def con_self_prev_store(self) -> None:
        v = self.stored()
        if self.foreach:
            self.emit(f"for q, u in zip(params, {v}):\n    self.prev[q] = u", True)
        else:
            self.emit(f"self.prev[p] = {v}", True)

    def con_self_prev_read(self) -> None:
        if self.foreach:
            self.new_temp("[self.prev[q] * 0.5 if q in self.prev else torch.zeros_like(q) "
                          "for q in params]")
        else:
            self.new_temp("self.prev[p] * 0.5 if p in self.prev else torch.zeros_like(p)")

    def con_state_hist(self) -> None:
        """Loop style, in the body: a list or a deque with maxlen in state."""
        container = self.ch.choice(["[]", "deque(maxlen=2)"])
        if container != "[]":
            self.imports.append("from collections import deque")
        v = self.stored()
        if self.ch.coin(0.4):
            self.emit(f'state.setdefault("hist", {container}).append({v})', True)
            return
        self.emit(f'hist = state.setdefault("hist", {container})\nhist.append({v})', True)
        if container == "[]" and self.ch.coin(0.5):
            self.emit("if len(hist) > 2:\n    hist.pop(0)", True)
        if self.ch.coin(0.5):
            self.new_temp(self.ch.choice(["torch.stack(list(hist)).mean(0)", "hist[0] * 0.5",
                                          "hist[-1].clone()"]))

    def con_helper_fn(self) -> None:
        """`d = self._direction(a, b)`, sometimes a second call on the first one's result."""
        call, fresh = self.helper_call
        a, b = (self.expr(REAL, self.ch.integer(0, 1)) for _ in range(2))
        name = self.new_temp(f"{call}({a.code}, {b.code})", fresh)
        if not fresh and a.code in self.values:  # the result is the argument
            self.values[a.code] = replace(self.values[a.code], fresh=False)
        if self.ch.coin(0.4):
            c = self.expr(REAL, 0)
            self.used.add(name)
            second = self.new_temp(f"{call}({name}, {c.code})", fresh)
            if not fresh:
                self.values[name] = replace(self.values[name], fresh=False)
            self.used.discard(second)

    def con_super_call(self) -> None:
        kind, _ = self.base_method
        who = self.ch.choice(["super()", "super()", "self"])
        if kind == "record":
            self.emit(f"{who}._record({self.one_tensor()})", True)
        elif self.foreach:
            a = self.expr(REAL, self.ch.integer(0, 1))
            self.new_temp(f"[self._scaled(t) for t in {a.code}]")
        else:
            a = self.expr(REAL, self.ch.integer(0, 1))
            self.new_temp(f"{who}._scaled({a.code})")

    def con_next_iter(self) -> None:
        if self.style == "loop":  # `first = next(iter(group["params"]))` at group level
            self.emit("fscale = 1 / (float(first.grad.norm()) + 1) if first.grad is not None "
                      "else 1.0", True)
        else:
            self.emit("fscale = 1 / (float(next(iter(grads)).norm()) + 1)", True)
        self.add_scalar("fscale")

    def con_neighbor(self) -> None:
        """Another param's gradient read inside the per-param loop."""
        if self.style == "loop":
            self.emit('nb = group["params"][i - 1].grad\n'
                      "nscale = 1 / (float(nb.norm()) + 1) if nb is not None else 1.0", True)
        else:
            self.emit("nb = grads[i - 1]\nnscale = 1 / (float(nb.norm()) + 1)", True)
        self.add_scalar("nscale")

    def con_global_norm(self) -> None:
        """A global gradient norm computed inside the per-param loop (or the foreach body)."""
        if self.foreach:
            total = "float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))"
        elif self.style == "loop":
            total = ('sum(float(q.grad.norm()) ** 2 for q in group["params"] '
                     "if q.grad is not None) ** 0.5")
        else:
            total = "sum(float(q.norm()) ** 2 for q in grads) ** 0.5"
        self.emit(f"total = {total}\nclip = min(1.0, 1.0 / (total + 1e-6))", True)
        self.add_scalar("clip")

    def con_try_raise(self) -> None:
        """Wraps the body (inner) or the param loop / helper call (outer) in try/except, with a
        raise inside at a statement boundary of the body; the handler reads the gradient."""
        exc = self.ch.choice(["_GenSkip", "ValueError"])
        if exc == "_GenSkip":
            self.module_pre += ["class _GenSkip(Exception):", "    pass", "", ""]
        catch = self.ch.choice([exc, f"({exc}, RuntimeError)", "Exception"])
        outer = self.style != "foreach" and self.ch.coin(0.4)
        tests = ['group["flag_a"]', 'not group["flag_b"]', 'group["flag_b"] and beta1 < 0']
        if not self.foreach:
            tests.append('group["flag_a"] and p.numel() > 20')
        args = "" if exc == "_GenSkip" else '"skip"'
        raise_ = f"if {self.ch.choice(tests)}:\n    raise {exc}({args})"
        spots = [i for i, line in enumerate(self.body) if not line.startswith(" ")
                 and line != "else:"] + [len(self.body)]
        at = self.ch.choice(spots)
        lines = raise_.split("\n")
        self.body[at:at] = lines
        self.extra += len(lines)
        counter = not self.helper and self.ch.coin(0.5)
        if counter:
            self.init_extra.append("self.fallbacks = 0")
        if outer:
            if self.helper:
                handler = ['torch._foreach_add_(params, torch._foreach_sign(grads), '
                           'alpha=-group["lr"] * 0.1)']
            else:
                handler = ['for q in group["params"]:', "    if q.grad is not None:",
                           "        q.add_(q.grad.sign(), alpha=-lr * 0.1)"]
            self.try_outer = (f"except {catch}:", handler + ["self.fallbacks += 1"] * counter)
            return
        if self.foreach:
            handler = [f"torch._foreach_add_(params, torch._foreach_sign({self.grad}), "
                       "alpha=-lr * 0.1)"]
        else:
            handler = [f"p.add_({self.grad}.sign(), alpha=-lr * 0.1)"]
        handler += ["self.fallbacks += 1"] * counter
        self.body = ["try:", *("    " + line for line in self.body), f"except {catch}:",
                     *("    " + line for line in handler)]
        self.extra += 2 + len(handler)

    def act_final(self) -> None:
        """Update the params from the temporaries, each unused one at least once."""
        unused = [t for t in self.temps() if t not in self.used]
        todo = unused or [self.ch.choice(self.temps())]
        table = FOREACH_FINAL if self.foreach else LOOP_FINAL
        for name in todo[:3]:
            tpl = Tpl(self.ch.choice(table))
            self.used.add(name)
            self.emit(self.fill(tpl, REAL, self.ch.integer(0, 1), U=name).code)


def _init_line(key: str, init: str, grad: str) -> str:
    if init == "grad":
        src = f"{grad}.clone()"
    else:
        src = f"torch.{init}_like(p)" if init == "ones" else "torch.zeros_like(p)"
    return f'state["{key}"] = {src}'


def _choose_constructs(ch: Chooser, style: str) -> set[str]:
    """Half of the programs get no construct (a shrunk program has none); the rest one or more."""
    if not NEW_CONSTRUCTS or not ch.coin(0.5):
        return set()
    available = [c for c, styles in CONSTRUCTS.items() if style in styles]
    chosen = {c for c in available if ch.coin(0.25)}
    return chosen or {ch.choice(available)}


def _setup_constructs(b: _Builder, pending: list[tuple[str, str]],
                      late: list[tuple[str, str]]) -> None:
    """Declarations (module, class, __init__, group level) of the chosen constructs, and their
    body actions: `pending` ones interleave with the core statements, `late` ones follow the
    update of the params."""
    ch, fe, features = b.ch, b.foreach, b.features

    def body_action(name: str) -> None:
        (late if ch.coin(0.3) else pending).append(("con", name))

    def group_line(line: str) -> None:  # before or after the param loop / helper call
        (b.group_pre if ch.coin(0.5) else b.group_post).append(line)

    if "tensor_lr" in features:
        b.tensor_lr = True
    if "minmax" in features:  # builtin max/min over Python numbers; templates over tensors
        overrides = {"lr": 'min(group["lr"], 1.0)', "eps": 'max(group["eps"], 1e-3)',
                     "beta1": 'min(max(group["beta1"], 0.0), 0.999)',
                     "beta2": 'max(group["beta2"], 0.5)'}
        for key in [k for k in overrides if ch.coin(0.5)] or [ch.choice(list(overrides))]:
            b.hyper[key] = overrides[key]
        extra = MINMAX_FOREACH_EXPR if fe else MINMAX_LOOP_EXPR
        b.expr_tpls = {k: v + extra.get(k, []) for k, v in b.expr_tpls.items()}
    if "getattr_grad" in features:
        b.getattr_grad = True
    if "helper_fn" in features:
        body, fresh = ch.choice(HELPERS_FOREACH if fe else HELPERS_LOOP)
        where = "module" if b.helper else ch.choice(["module", "method", "static"])
        lines = body.split("\n")
        if where == "module":
            b.module_pre += ["def _direction(g, m):", *("    " + x for x in lines), "", ""]
            b.helper_call = ("_direction", fresh)
        else:
            deco = ["    @staticmethod"] if where == "static" else []
            args = "g, m" if where == "static" else "self, g, m"
            b.methods += ["", *deco, f"    def _direction({args}):",
                          *("        " + x for x in lines)]
            b.helper_call = ("self._direction", fresh)
        pending.append(("con", "helper_fn"))
    if "self_log" in features:
        b.init_extra.append("self.log = []")
        if b.helper:
            group_line("self.log.append(" + ch.choice(["grads", "[g.clone() for g in grads]",
                                                        "grads[0]"]) + ")")
        else:
            body_action("self_log")
    if "self_prev" in features:
        b.init_extra.append("self.prev = {}")
        body_action("self_prev_store")
        if ch.coin(0.6):
            pending.append(("con", "self_prev_read"))
    if "state_hist" in features:
        if b.style == "loop":
            body_action("state_hist")
        else:  # in the collecting loop, before the update
            container = ch.choice(["[]", "deque(maxlen=2)"])
            if container != "[]":
                b.imports.append("from collections import deque")
            value = ch.choice(["{G}", "{G}", "{G}.clone()"])
            if ch.coin(0.5):
                b.collect_extra.append(f'state.setdefault("hist", {container}).append({value})')
            else:
                b.collect_extra += [f'hist = state.setdefault("hist", {container})',
                                    f"hist.append({value})"]
    if "next_iter" in features:
        if b.style == "loop":
            b.group_pre.append('first = next(iter(group["params"]))')
        pending.append(("con", "next_iter"))
    if "super_call" in features:
        kind, body = ch.choice(BASE_METHODS if not b.helper else BASE_METHODS[:3])
        b.base = "_GenBase"
        b.base_method = (kind, body)
        base = ["class _GenBase(Optimizer):"]
        if "self.norms" in body:
            base += ["    def __init__(self, params, defaults):",
                     "        super().__init__(params, defaults)", "        self.norms = []", ""]
        name = "_record" if kind == "record" else "_scaled"
        b.module_pre += [*base, f"    def {name}(self, t):", f"        {body}", "", ""]
        if b.helper:
            group_line(f"{ch.choice(['super()', 'self'])}._record(grads[0])")
        else:
            body_action("super_call")
    if "other_grads" in features:
        forms = ["global_in", "post"]
        if b.style == "loop":
            forms += ["neighbor", "pre"]
        elif b.style == "loop-helper" and b.loop_form != "zip":
            forms.append("neighbor")
        form = ch.choice(forms)
        norm = ('sum(float(q.grad.norm()) ** 2 for q in group["params"] '
                "if q.grad is not None) ** 0.5")
        if form == "neighbor":
            if b.style == "loop":
                b.loop_head = 'for i, p in enumerate(group["params"]):'
            pending.append(("con", "neighbor"))
        elif form == "global_in":
            pending.append(("con", "global_norm"))
        elif form == "pre":  # before the loop: every gradient still as the caller left it
            b.group_pre += [f"total = {norm}", "clip = min(1.0, 1.0 / (total + 1e-6))"]
            b.add_scalar("clip")
        else:  # after the update (in the foreach style, at the end of the body)
            target = ch.choice(["self.grad_norm", 'group["grad_norm"]'])
            b.group_post.append(f"{target} = {norm}")


def _program(ch: Chooser) -> tuple[_Builder, str, int]:
    style = ch.choice(["loop", "foreach", "loop", "foreach", "loop-helper", "foreach-helper"])
    b = _Builder(ch, style)
    b.features = _choose_constructs(ch, style)
    b.loop_form = ch.choice(["zip", "enumerate", "range"])  # how a loop helper walks its lists
    fe = b.foreach
    n_states = ch.integer(1, 3)
    keys: list[str] = []
    pool = list(STATE_KINDS)
    for _ in range(n_states):
        key = ch.choice(pool)
        pool.remove(key)
        keys.append(key)
    locals_ = {k: (k + "s" if fe else k) for k in keys}
    grad_direct = style == "loop" and ch.coin(0.15)  # read `p.grad` itself, no local `grad`
    if grad_direct:
        b.grad = "p.grad"
    b.values[b.grad] = Val(REAL, False, "grad")
    b.values[b.param] = Val(REAL, False, "param")
    for k in keys:
        b.values[locals_[k]] = Val(STATE_KINDS[k][0], False, "state")
    pending: list[tuple[str, str]] = []
    late: list[tuple[str, str]] = []
    _setup_constructs(b, pending, late)
    if fe and not b.helper and b.group_pre:  # the foreach body is at group level already
        b.emit("\n".join(b.group_pre), True)
        b.group_pre = []

    # prologue of the body: maximize and L2 weight decay rebind the gradient
    if not grad_direct and ch.coin(0.3):
        neg = "torch._foreach_neg(grads)" if fe else ch.choice(["-grad", "grad.neg()"])
        form = ch.choice(["if", "ifexp", "ifexp_not"])
        if form == "if":
            b.emit(f'if group["maximize"]:\n    {b.grad} = {neg}')
        elif form == "ifexp":
            b.emit(f'{b.grad} = {neg} if group["maximize"] else {b.grad}')
        else:
            b.emit(f'{b.grad} = {b.grad} if not group["maximize"] else {neg}')
    if not grad_direct and ch.coin(0.2):
        wd = 'group["weight_decay"]'
        add = f"torch._foreach_add(grads, params, alpha={wd})" if fe else \
            ch.choice([f"grad.add(p, alpha={wd})", f"grad + {wd} * p"])
        b.emit(f"if {wd} != 0:\n    {b.grad} = {add}")

    pending += [("state", locals_[k]) for k in keys if k != "prev_grad"]
    pending += [("temp", "")] * ch.integer(1, 3)
    if not fe and not grad_direct and ch.coin(0.3):  # `p.grad` read next to `grad`
        b.values["p.grad"] = Val(REAL, False, "grad")
    for action, p in (("cond", 0.5), ("inplace", 0.4), ("rebind", 0.3), ("accumulate", 0.15),
                      ("decay", 0.2), ("alias", 0.25), ("grad_inplace", 0.15),
                      ("functional_state", 0.15)):
        if ch.coin(p):
            pending.append((action, ""))
    while pending:
        action, arg = pending.pop(ch.integer(0, len(pending) - 1))
        if action == "state":
            b.act_state(arg)
        elif action == "con":  # constructs always run; size() does not count them
            getattr(b, "con_" + arg)()
        elif b.size() < 10 or (action == "temp" and not b.temps()):  # 5-15 statements in all
            getattr(b, "act_" + action)()
    while not b.temps() or b.size() < 4:
        b.act_temp()
    b.act_final()
    for _, arg in late:
        getattr(b, "con_" + arg)()
    if ch.coin(0.25):  # the gradient is read at the very end, maybe on one path only
        read = "torch._foreach_add_(params, grads, alpha=-lr * 0.01)" if fe \
            else f"p.add_({b.grad}, alpha=-lr * 0.01)"
        b.emit(f"if {ch.choice(TESTS)}:\n    {read}" if ch.coin(0.4) else read)
    if "prev_grad" in keys:  # the previous gradient is overwritten last
        b.emit(f"torch._foreach_copy_(prev_grads, {b.grad})" if fe
               else f"prev_grad.copy_({b.grad})")
    if "try_raise" in b.features:
        b.con_try_raise()
    if fe and not b.helper and b.group_post:
        b.emit("\n".join(b.group_post), True)
        b.group_post = []
    return b, _module(b, keys, ch.coin(0.3)), b.size()


def _module(b: _Builder, keys: list[str], closure: bool) -> str:
    fe = b.foreach
    imports = ["import torch", *sorted(set(b.imports)), "from torch.optim import Optimizer"]
    lr = "torch.tensor(float(lr))" if b.tensor_lr else "lr"
    head = [
        *imports,
        "",
        "",
        *b.module_pre,
        f"class {CLASS_NAME}({b.base}):",
        "    def __init__(self, params, lr=0.01, beta1=0.9, beta2=0.99, eps=0.1,",
        "                 weight_decay=0.01, maximize=False, flag_a=False, flag_b=True):",
        f"        defaults = dict(lr={lr}, beta1=beta1, beta2=beta2, eps=eps,",
        "                        weight_decay=weight_decay, maximize=maximize, flag_a=flag_a,",
        "                        flag_b=flag_b)",
        "        super().__init__(params, defaults)",
        *("        " + line for line in b.init_extra),
        *b.methods,
        "",
        "    @torch.no_grad()",
        "    def step(self, closure=None):",
    ]
    if closure:
        head += ["        loss = None", "        if closure is not None:",
                 "            with torch.enable_grad():", "                loss = closure()"]
    head.append("        for group in self.param_groups:")
    i2, i3, i4 = " " * 12, " " * 16, " " * 20
    hyper = [f'{i2}{k} = {b.hyper.get(k, f"group[{k!r}]")}'.replace("'", '"')
             for k in ("lr", "beta1", "beta2", "eps")]
    grad_at_init = "grad" if b.style == "loop" and b.grad == "grad" else "p.grad"
    inits = [i4 + _init_line(k, STATE_KINDS[k][1], grad_at_init) for k in keys]
    lists = ["params", "grads", *(k + "s" for k in keys)]
    g = "g" if b.getattr_grad else "p.grad"
    skip = [f'{i3}g = getattr(p, "grad", None)', f"{i3}if g is None:"] if b.getattr_grad else \
        [f"{i3}if p.grad is None:"]
    collect = [f"{i2}{', '.join(lists)} = {', '.join(['[]'] * len(lists))}",
               f'{i2}for p in group["params"]:', *skip,
               f"{i3}    continue", f"{i3}state = self.state[p]", f"{i3}if len(state) == 0:",
               *inits, *(i3 + line.replace("{G}", g) for line in b.collect_extra),
               f"{i3}params.append(p)", f"{i3}grads.append({g})",
               *(f'{i3}{k}s.append(state["{k}"])' for k in keys),
               f"{i2}if not params:", f"{i2}    continue"]
    pre = [i2 + line for line in b.group_pre]
    post = [i2 + line for line in b.group_post]
    helper: list[str] = []
    if b.helper:  # the update lives in a module-level function that step calls
        call = [f"{i2}_gen_update(group, {', '.join(lists)})"]
        lines = [*collect, *pre, *_try_outer(b, call, i2), *post]
        helper = ["", "", f"def _gen_update(group, {', '.join(lists)}):",
                  *(line[8:] for line in hyper)]
        if fe:
            helper += ["    " + line for line in b.body]
        elif b.loop_form == "zip":
            loop_vars = ", ".join(["p", "grad", *keys])
            helper += [f"    for {loop_vars} in zip({', '.join(lists)}):",
                       *("        " + line for line in b.body)]
        else:  # torch's _single_tensor_* layout: index the lists
            head_line = "for i, p in enumerate(params):" if b.loop_form == "enumerate" else \
                "for i in range(len(params)):"
            picks = ([] if b.loop_form == "enumerate" else ["p = params[i]"]) + \
                [f"{name} = {name}s[i]" for name in ["grad", *keys]]
            helper += [f"    {head_line}", *("        " + line for line in picks),
                       *("        " + line for line in b.body)]
    elif fe:
        lines = [*collect[:1], *hyper, *collect[1:], *(i2 + line for line in b.body)]
    else:
        if b.getattr_grad and b.grad == "grad":
            grad_lines = [f'{i3}grad = getattr(p, "grad", None)', f"{i3}if grad is None:",
                          f"{i3}    continue"]
        elif b.getattr_grad:
            grad_lines = [f'{i3}if getattr(p, "grad", None) is None:', f"{i3}    continue"]
        else:
            grad_lines = [f"{i3}if p.grad is None:", f"{i3}    continue",
                          *([] if b.grad == "p.grad" else [f"{i3}grad = p.grad"])]
        loop = [f"{i2}{b.loop_head}", *grad_lines, f"{i3}state = self.state[p]",
                f"{i3}if len(state) == 0:", *inits,
                *(f'{i3}{k} = state["{k}"]' for k in keys),
                *(i3 + line for line in b.body)]
        lines = [*hyper, *pre, *_try_outer(b, loop, i2), *post]
    tail = ["        return loss" if closure else "        return None"]
    return "\n".join(head + lines + tail + helper) + "\n"


def _try_outer(b: _Builder, lines: list[str], indent: str) -> list[str]:
    """`lines` (the param loop or the helper call) in try/except when the program says so."""
    if b.try_outer is None:
        return lines
    catch, handler = b.try_outer
    return [f"{indent}try:", *("    " + line for line in lines), indent + catch,
            *(indent + "    " + line for line in handler)]


def generate_with(ch: Chooser, seed: int | None = None) -> Program:
    b, source, statements = _program(ch)
    step = source.split("def step", 1)[1]
    flags = [f for f in FLAGS if f'group["{f}"]' in step]
    frees = re.search(r'state\["\w+"\] = \w+\n', step) is not None or \
        bool(b.features & _KEEPS_OLD)
    return Program(seed, b.style, source, flags, statements, frees, sorted(b.features))


def generate(seed: int) -> Program:
    """The program of a seed (deterministic)."""
    return generate_with(RandomChooser(seed), seed)


def configs(program: Program) -> list[dict[str, Any]]:
    """Constructor keyword sets that reach every branch: defaults, then each flag flipped."""
    return [{}] + [{f: not FLAGS[f]} for f in program.flags]


def _main(argv: Sequence[str]) -> None:
    for arg in argv or ["0"]:
        sys.stdout.write(generate(int(arg)).source)


if __name__ == "__main__":
    _main(sys.argv[1:])

