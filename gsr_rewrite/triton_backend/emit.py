"""Emit the Triton backend of an R-variant: per-element math in a fixed multi-tensor driver.

For every configuration traced by :mod:`gsr_rewrite.triton_backend.trace`, the element program
is split:

* **host scalars** — every maximal sub-expression with no tensor element in it (``lr / (1 -
  beta1**step)``) becomes a *slot*, computed on the host in float64 by a generated Python function
  (as the eager step computes it) and read by the kernel from a small device buffer, so schedules
  never recompile;
* **kernel math** — the rest, with common sub-expressions shared, in fp32, as a ``@triton.jit``
  helper called by a fixed driver: one program per chunk of ``CH`` elements of one tensor, the
  tensor's pointers read from a table, an unmasked path for full blocks and a masked tail.

The generated Python is plain text that :mod:`gsr_rewrite.triton_backend.specialize` writes to a
cache file and imports, so Triton can read the kernels' source (it refuses ``exec``'d functions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy

from gsr_rewrite.runtime.triton_launch import ident as _name
from gsr_rewrite.triton_backend.trace import ElementProgram, KernelTraceError, element_symbol

_TL_FUNCS = {"exp": "tl.exp", "log": "tl.log", "Abs": "tl.abs", "sign": "sign"}
_PY_FUNCS = {"exp": "math.exp", "log": "math.log", "Abs": "abs", "sign": "_sign"}


class EmitError(KernelTraceError):
    """An element program uses something the Triton printer cannot express."""


def _is_element(s: sympy.Symbol) -> bool:
    """Kernel-side symbols: tensor elements and per-tensor reductions (not host scalars)."""
    return str(s.name).startswith(("e_", "r_"))


def _hoist(expr: Any, slots: dict[Any, sympy.Symbol]) -> Any:
    """``expr`` with every maximal element-free sub-expression replaced by a slot symbol."""

    def slot(e: Any) -> Any:
        if e.is_Number:
            return e
        if e not in slots:
            slots[e] = sympy.Symbol(f"c{len(slots)}")
        return slots[e]

    if isinstance(expr, sympy.Piecewise):
        return sympy.Piecewise(*((_hoist(e, slots), _hoist(c, slots)) for e, c in expr.args))
    if isinstance(expr, (sympy.logic.boolalg.Boolean, sympy.core.relational.Relational)):
        return expr.func(*(_hoist(a, slots) for a in expr.args)) if expr.args else expr
    if not any(_is_element(s) for s in expr.free_symbols):
        return slot(expr)
    if not expr.args:
        return expr
    if isinstance(expr, (sympy.Add, sympy.Mul)):
        host = [a for a in expr.args if not any(_is_element(s) for s in a.free_symbols)]
        rest = [_hoist(a, slots) for a in expr.args if a not in host]
        if host:
            rest.append(slot(expr.func(*host)))
        return expr.func(*rest)
    return expr.func(*(_hoist(a, slots) for a in expr.args))


class _Printer:
    """sympy -> Python text; ``kernel`` prints Triton (fp32, IEEE div/sqrt), else host float64."""

    def __init__(self, kernel: bool, names: dict[str, str]) -> None:
        self.kernel, self.names = kernel, names

    def __call__(self, e: Any) -> str:
        if e.is_Symbol:
            return self.names.get(str(e.name), str(e.name))
        if e.is_Number:
            if not e.is_real:
                raise EmitError(f"complex constant {e}")
            return repr(float(e))
        if isinstance(e, sympy.Add):
            return "(" + " + ".join(self(a) for a in e.args) + ")"
        if isinstance(e, sympy.Mul):
            num = [a for a in e.args if not (a.is_Pow and a.exp.is_negative and a.exp.is_Number)]
            den = [a.base ** (-a.exp) for a in e.args if a not in num]
            top = " * ".join(self(a) for a in num) or "1.0"
            if not den:
                return f"({top})"
            bottom = " * ".join(self(a) for a in den)
            return f"tl.div_rn({top}, {bottom})" if self.kernel else f"(({top}) / ({bottom}))"
        if isinstance(e, sympy.Pow):
            return self._pow(e.base, e.exp)
        if isinstance(e, (sympy.Max, sympy.Min)):
            fn = ("tl.maximum" if isinstance(e, sympy.Max) else "tl.minimum") if self.kernel \
                else ("max" if isinstance(e, sympy.Max) else "min")
            text = self(e.args[0])
            for a in e.args[1:]:
                text = f"{fn}({text}, {self(a)})"
            return text
        if isinstance(e, sympy.Piecewise):
            text = self(e.args[-1][0])
            for value, cond in reversed(e.args[:-1]):
                text = (f"tl.where({self(cond)}, {self(value)}, {text})" if self.kernel
                        else f"({self(value)} if {self(cond)} else {text})")
            return text
        if isinstance(e, sympy.core.relational.Relational):
            return f"({self(e.lhs)} {e.rel_op} {self(e.rhs)})"
        if isinstance(e, (sympy.And, sympy.Or)):
            op = (" & " if self.kernel else " and ") if isinstance(e, sympy.And) else \
                (" | " if self.kernel else " or ")
            return "(" + op.join(self(a) for a in e.args) + ")"
        if isinstance(e, sympy.Not):
            return f"({'~' if self.kernel else 'not '}{self(e.args[0])})"
        if e in (sympy.true, sympy.false):
            return str(bool(e))
        name = type(e).__name__
        table = _TL_FUNCS if self.kernel else _PY_FUNCS
        if name in table and len(e.args) == 1:
            return f"{table[name]}({self(e.args[0])})"
        raise EmitError(f"no {'Triton' if self.kernel else 'host'} translation for {name}")

    def _pow(self, base: Any, exp: Any) -> str:
        b = self(base)
        if not self.kernel:
            return f"math.sqrt({b})" if exp == sympy.S.Half else f"({b} ** {self(exp)})"
        if exp == sympy.S.Half:
            return f"tl.sqrt_rn({b})"
        if exp == -sympy.S.Half:
            return f"tl.div_rn(1.0, tl.sqrt_rn({b}))"
        if exp.is_Integer and 1 <= abs(int(exp)) <= 4:
            prod = "(" + " * ".join([b] * abs(int(exp))) + ")"
            return prod if exp > 0 else f"tl.div_rn(1.0, {prod})"
        raise EmitError(f"power {base}**{exp} of a tensor element")


@dataclass
class PassText:
    """One launch over all chunks: loads, per-element math, stores, reduction partials."""

    math: str  # source of the @triton.jit helper (named ``math_name``)
    math_name: str
    loads: tuple[str, ...]  # roles read
    outputs: tuple[str, ...]  # roles written (in the order the helper returns them)
    produces: tuple[str, ...]  # reduction kinds whose per-chunk partials this pass writes
    consumes: tuple[str, ...]  # reduction kinds this pass reads back as r0, r1, ...


@dataclass
class KernelText:
    """The kernel sources for one element program, and what the host needs to drive them."""

    passes: list[PassText]
    roles: tuple[str, ...]  # pointer-table columns
    n_slots: int
    slots_fn: str  # body of the host function giving the slot values


def _helper(name: str, args: list[str], exprs: list[Any], kprint: _Printer) -> str:
    common, reduced = sympy.cse(exprs, symbols=sympy.numbered_symbols("t"))
    lines = [f"def {name}({', '.join(args)}):"]
    lines += [f"    {sym} = {kprint(val)}" for sym, val in common]
    lines.append(f"    return {', '.join(kprint(e) for e in reduced)}")
    return "\n".join(lines)


def _phase_two(program: ElementProgram) -> Any:
    """The param update written over the *new* state values (what memory holds after pass 1)."""
    written = {r: e for r, e in program.outputs.items() if r != "param"}
    fresh = {e: sympy.Symbol("n_" + _name(r)) for r, e in written.items()}
    update = sympy.sympify(program.outputs["param"]).xreplace(fresh)
    stale = [r for r in written if element_symbol(r) in update.free_symbols]
    if stale:
        raise EmitError(f"the param update reads the old value of state {stale[0]!r} after a "
                        "per-tensor reduction: it needs more than two passes")
    return update.xreplace({v: element_symbol(r) for r, v in
                            ((r, sympy.Symbol("n_" + _name(r))) for r in written)})


def kernel_text(program: ElementProgram, name: str) -> KernelText:
    """One pass, or two when the param update needs per-tensor reductions (LAMB's trust ratio):
    pass 1 updates the state and writes per-chunk partial sums, pass 2 reduces them per tensor
    (in a fixed order: deterministic, no atomics) and updates the param, reading the new state
    back.  Storing the update in the gradient between passes would move the same bytes for
    LAMB (40 B/param fp32 either way), so the gradient is never written."""
    slots: dict[Any, sympy.Symbol] = {}
    role_of = {_name(r): r for r in [*program.inputs, *program.outputs]}
    kprint = _Printer(True, {"e_" + v: "x_" + v for v in role_of})
    kinds = tuple(kind for kind, _ in program.reductions)
    if kinds:
        states = sorted(r for r in program.outputs if r != "param")
        if any(s.name.startswith("r_") for r in states
               for s in sympy.sympify(program.outputs[r]).free_symbols):
            raise EmitError("a state update depends on a per-tensor reduction: needs more than "
                            "two passes")
        plan = [(states, [f for _, f in program.reductions], (), kinds),
                (["param"], [], kinds, ())]
        exprs = {"param": _phase_two(program),
                 **{r: sympy.sympify(program.outputs[r]) for r in states}}
    else:  # no outputs (lr == 0: nothing per-element changes): no kernel, scalar updates only
        plan = [(sorted(program.outputs, key=lambda r: (r != "param", r)), [], (), ())]
        plan = plan if program.outputs else []
        exprs = {r: sympy.sympify(e) for r, e in program.outputs.items()}
    passes = []
    hoisted_passes = [[_hoist(e, slots) for e in [*(exprs[r] for r in outputs), *partial]]
                      for outputs, partial, _, _ in plan]  # every slot first: one signature
    for k, (outputs, _, consumes, produces) in enumerate(plan):
        hoisted = hoisted_passes[k]
        loads = sorted({s.name[2:] for e in hoisted for s in e.free_symbols
                        if s.name.startswith("e_")})
        args = ([f"x_{v}" for v in loads] + [f"r{i}" for i in range(len(consumes))]
                + [f"c{i}" for i in range(len(slots))])
        math_name = f"{name}_{k}" if len(plan) > 1 else name
        kp = _Printer(True, {**kprint.names, **{f"r_{i}": f"r{i}" for i in range(len(kinds))}})
        passes.append(PassText(_helper(math_name, args, hoisted, kp), math_name,
                               tuple(role_of[v] for v in loads), tuple(outputs), produces,
                               consumes))
    hprint = _Printer(False, {s: f"v[{s!r}]" for s in program.scalars})
    values = ", ".join(hprint(e) for e in slots)
    roles = ("param", "grad", *sorted(r for r in role_of.values() if r not in ("param", "grad")))
    return KernelText(passes, roles, len(slots), f"({values}{',' if len(slots) == 1 else ''})")


def host_function(name: str, body: str) -> str:
    return f"def {name}(v):\n    return {body}\n"


def guard_text(program: ElementProgram) -> str:
    hprint = _Printer(False, {s: f"v[{s!r}]" for s in program.scalars})
    terms = [f"({hprint(rel)}) is {value}" for rel, value in program.guards]
    return " and ".join(terms) or "True"


def updates_text(program: ElementProgram) -> str:
    hprint = _Printer(False, {s: f"v[{s!r}]" for s in program.scalars})
    return "{" + ", ".join(f"{k!r}: {hprint(e)}" for k, e in sorted(program.updates.items())) + "}"


DRIVER = '''
@triton.jit
def {name}(table, chunks, slots, partials, W: tl.constexpr, CH: tl.constexpr, BL: tl.constexpr,
{indent}ALIGNED: tl.constexpr, NP: tl.constexpr, {dtypes}):
    pid = tl.program_id(0)
    row = table + tl.load(chunks + 2 * pid).to(tl.int64) * W
    start = tl.load(chunks + 2 * pid + 1).to(tl.int64) * CH
    n = tl.load(row + W - 3)
{pointers}
    if ALIGNED:
{aligned}
{scalars}
{consume}
{init}
    stop = tl.minimum(n - start, CH)
    for off in range(0, stop, BL):
        idx = start + off + tl.arange(0, BL)
        if off + BL <= stop:
{full}
        else:
            mask = idx < n
{tail}
{produce}
'''
_FINISH = {"norm2": "tl.sqrt_rn(tl.sum({}))", "sum": "tl.sum({})"}
_TERM = {"norm2": "{0} * {0}", "sum": "{0}"}


def driver_text(name: str, p: PassText, k: KernelText) -> str:
    """The fixed multi-tensor driver of one pass around its math helper.

    Table row: one address per role, numel, then the tensor's first and past-the-end chunk
    (pass 2 sums pass 1's per-chunk partials over that range, always in the same order)."""
    var = {r: _name(r) for r in k.roles}
    dtypes = ", ".join(f"T_{var[r]}: tl.constexpr" for r in k.roles)
    pointers = "\n".join(f"    p_{var[r]} = tl.load(row + {i}).to(tl.pointer_type(T_{var[r]}))"
                         for i, r in enumerate(k.roles))
    aligned = "\n".join(f"        p_{var[r]} = tl.multiple_of(p_{var[r]}, 16)" for r in k.roles)
    scalars = "\n".join(f"    c{i} = tl.load(slots + {i})" for i in range(k.n_slots)) or "    pass"
    consume = ["    cs = tl.load(row + W - 2)", "    ce = tl.load(row + W - 1)"]
    consume = consume if p.consumes else []
    for i, kind in enumerate(p.consumes):
        consume += [f"    s{i} = tl.zeros([64], dtype=tl.float32)",
                    "    for q in range(cs, ce, 64):",
                    "        qi = q + tl.arange(0, 64)",
                    f"        s{i} += tl.load(partials + qi * NP + {i}, mask=qi < ce, other=0.0)",
                    f"    r{i} = {_FINISH[kind].format(f's{i}')}"]
    init = [f"    a{i} = tl.zeros([BL], dtype=tl.float32)" for i in range(len(p.produces))]
    produce = [f"    tl.store(partials + pid * NP + {i}, tl.sum(a{i}))"
               for i in range(len(p.produces))]
    call = ", ".join([f"x_{var[r]}" for r in p.loads] + [f"r{i}" for i in range(len(p.consumes))]
                     + [f"c{i}" for i in range(k.n_slots)])
    outs = [f"o_{var[r]}" for r in p.outputs] + [f"v{i}" for i in range(len(p.produces))]

    def body(masked: bool) -> str:
        pad = " " * 12
        m = ", mask=mask, other=1.0" if masked else ""
        sm = ", mask=mask" if masked else ""
        lines = [f"{pad}x_{var[r]} = tl.load(p_{var[r]} + idx{m}).to(tl.float32)" for r in p.loads]
        lines.append(f"{pad}{', '.join(outs)} = {p.math_name}({call})")
        lines += [f"{pad}tl.store(p_{var[r]} + idx, store_cast(o_{var[r]}, T_{var[r]}){sm})"
                  for r in p.outputs]
        for i, kind in enumerate(p.produces):
            term = _TERM[kind].format(f"v{i}")
            lines.append(f"{pad}a{i} += " + (f"tl.where(mask, {term}, 0.0)" if masked else term))
        return "\n".join(lines)

    return DRIVER.format(name=name, indent=" " * (len(name) + 5), dtypes=dtypes,
                         pointers=pointers, aligned=aligned, scalars=scalars,
                         consume="\n".join(consume), init="\n".join(init),
                         full=body(False), tail=body(True), produce="\n".join(produce))
