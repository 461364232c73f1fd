"""Random optimizer step programs for the property tests of gsr-rewrite (tests/test_properties.py).

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

ALIASES and FUNCTIONAL_STATE switch off the two program features that found the bugs listed next
to them; the test keeps both on. Turning them off (in every process that generates) helps tell a
regression of those from a new kind of bug.
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
#: boolean hyperparameters of every generated class, with their defaults
FLAGS = {"maximize": False, "flag_a": False, "flag_b": True}


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

    # -- output --------------------------------------------------------------------------
    def emit(self, text: str) -> None:
        for line in text.split("\n"):
            self.body.append("    " * self.indent + line)

    def size(self) -> int:
        """Statements emitted so far (an `if` counts, its `else:` does not)."""
        return sum(1 for line in self.body if line.strip() != "else:")

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
            if key in SCALARS:
                return self.ch.choice(SCALARS[key])
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


def _program(ch: Chooser) -> tuple[str, str, int]:
    style = ch.choice(["loop", "foreach", "loop", "foreach", "loop-helper", "foreach-helper"])
    b = _Builder(ch, style)
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

    pending: list[tuple[str, str]] = [("state", locals_[k]) for k in keys if k != "prev_grad"]
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
        elif b.size() < 10 or (action == "temp" and not b.temps()):  # 5-15 statements in all
            getattr(b, "act_" + action)()
    while not b.temps() or b.size() < 4:
        b.act_temp()
    b.act_final()
    if ch.coin(0.25):  # the gradient is read at the very end, maybe on one path only
        read = "torch._foreach_add_(params, grads, alpha=-lr * 0.01)" if fe \
            else f"p.add_({b.grad}, alpha=-lr * 0.01)"
        b.emit(f"if {ch.choice(TESTS)}:\n    {read}" if ch.coin(0.4) else read)
    if "prev_grad" in keys:  # the previous gradient is overwritten last
        b.emit(f"torch._foreach_copy_(prev_grads, {b.grad})" if fe
               else f"prev_grad.copy_({b.grad})")
    loop_form = ch.choice(["zip", "enumerate", "range"])  # how a loop helper walks its lists
    return style, _module(b, keys, ch.coin(0.3), loop_form), b.size()


def _module(b: _Builder, keys: list[str], closure: bool, loop_form: str) -> str:
    fe = b.foreach
    head = [
        "import torch",
        "from torch.optim import Optimizer",
        "",
        "",
        f"class {CLASS_NAME}(Optimizer):",
        "    def __init__(self, params, lr=0.01, beta1=0.9, beta2=0.99, eps=0.1,",
        "                 weight_decay=0.01, maximize=False, flag_a=False, flag_b=True):",
        "        defaults = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps,",
        "                        weight_decay=weight_decay, maximize=maximize, flag_a=flag_a,",
        "                        flag_b=flag_b)",
        "        super().__init__(params, defaults)",
        "",
        "    @torch.no_grad()",
        "    def step(self, closure=None):",
    ]
    if closure:
        head += ["        loss = None", "        if closure is not None:",
                 "            with torch.enable_grad():", "                loss = closure()"]
    head.append("        for group in self.param_groups:")
    i2, i3, i4 = " " * 12, " " * 16, " " * 20
    hyper = [f'{i2}lr = group["lr"]', f'{i2}beta1 = group["beta1"]',
             f'{i2}beta2 = group["beta2"]', f'{i2}eps = group["eps"]']
    grad_at_init = "grad" if b.style == "loop" and b.grad == "grad" else "p.grad"
    inits = [i4 + _init_line(k, STATE_KINDS[k][1], grad_at_init) for k in keys]
    lists = ["params", "grads", *(k + "s" for k in keys)]
    collect = [f"{i2}{', '.join(lists)} = {', '.join(['[]'] * len(lists))}",
               f'{i2}for p in group["params"]:', f"{i3}if p.grad is None:",
               f"{i3}    continue", f"{i3}state = self.state[p]", f"{i3}if len(state) == 0:",
               *inits, f"{i3}params.append(p)", f"{i3}grads.append(p.grad)",
               *(f'{i3}{k}s.append(state["{k}"])' for k in keys),
               f"{i2}if not params:", f"{i2}    continue"]
    helper: list[str] = []
    if b.helper:  # the update lives in a module-level function that step calls
        lines = [*collect, f"{i2}_gen_update(group, {', '.join(lists)})"]
        helper = ["", "", f"def _gen_update(group, {', '.join(lists)}):",
                  *(line[8:] for line in hyper)]
        if fe:
            helper += ["    " + line for line in b.body]
        elif loop_form == "zip":
            loop_vars = ", ".join(["p", "grad", *keys])
            helper += [f"    for {loop_vars} in zip({', '.join(lists)}):",
                       *("        " + line for line in b.body)]
        else:  # torch's _single_tensor_* layout: index the lists
            head_line = "for i, p in enumerate(params):" if loop_form == "enumerate" else \
                "for i in range(len(params)):"
            picks = ([] if loop_form == "enumerate" else ["p = params[i]"]) + \
                [f"{name} = {name}s[i]" for name in ["grad", *keys]]
            helper += [f"    {head_line}", *("        " + line for line in picks),
                       *("        " + line for line in b.body)]
    elif fe:
        lines = [*collect[:1], *hyper, *collect[1:], *(i2 + line for line in b.body)]
    else:
        grad_line = [] if b.grad == "p.grad" else [f"{i3}grad = p.grad"]
        lines = [*hyper, f'{i2}for p in group["params"]:', f"{i3}if p.grad is None:",
                 f"{i3}    continue", *grad_line, f"{i3}state = self.state[p]",
                 f"{i3}if len(state) == 0:", *inits,
                 *(f'{i3}{k} = state["{k}"]' for k in keys),
                 *(i3 + line for line in b.body)]
    tail = ["        return loss" if closure else "        return None"]
    return "\n".join(head + lines + tail + helper) + "\n"


def generate_with(ch: Chooser, seed: int | None = None) -> Program:
    style, source, statements = _program(ch)
    step = source.split("def step", 1)[1]
    flags = [f for f in FLAGS if f'group["{f}"]' in step]
    frees = re.search(r'state\["\w+"\] = \w+\n', step) is not None
    return Program(seed, style, source, flags, statements, frees)


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

