"""Emit the Triton backend of an R-variant: per-element math in a fixed multi-tensor driver.

For every configuration traced by :mod:`gsr_rewrite.kernel_trace`, the element program is split:

* **host scalars** — every maximal sub-expression with no tensor element in it (``lr / (1 -
  beta1**step)``) becomes a *slot*, computed on the host in float64 by a generated Python function
  (as the eager step computes it) and read by the kernel from a small device buffer, so schedules
  never recompile;
* **kernel math** — the rest, with common sub-expressions shared, in fp32, as a ``@triton.jit``
  helper called by a fixed driver: one program per chunk of ``CH`` elements of one tensor, the
  tensor's pointers read from a table, an unmasked path for full blocks and a masked tail.

The generated Python is plain text appended to the eager module, so Triton can read the kernels'
source (it refuses ``exec``'d functions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy

from gsr_rewrite.kernel_trace import ElementProgram, KernelTraceError, _name

_TL_FUNCS = {"exp": "tl.exp", "log": "tl.log", "Abs": "tl.abs", "sign": "sign"}
_PY_FUNCS = {"exp": "math.exp", "log": "math.log", "Abs": "abs", "sign": "_sign"}


class EmitError(KernelTraceError):
    """An element program uses something the Triton printer cannot express."""


def _is_element(s: sympy.Symbol) -> bool:
    return str(s.name).startswith("e_")


def _hoist(expr: Any, slots: dict[Any, sympy.Symbol]) -> Any:
    """``expr`` with every maximal element-free sub-expression replaced by a slot symbol."""

    def slot(e: Any) -> Any:
        if e.is_Number:
            return e
        if e not in slots:
            slots[e] = sympy.Symbol(f"c{len(slots)}")
        return slots[e]

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
class KernelText:
    """The kernel source for one element program, and what the host needs to drive it."""

    math: str  # @triton.jit helper, also the deduplication key
    roles: tuple[str, ...]  # pointer-table columns
    loads: tuple[str, ...]  # roles read
    outputs: tuple[str, ...]  # roles written
    n_slots: int
    slots_fn: str  # body of the host function giving the slot values


def kernel_text(program: ElementProgram, name: str) -> KernelText:
    slots: dict[Any, sympy.Symbol] = {}
    outputs = sorted(program.outputs, key=lambda r: (r != "param", r))
    hoisted = [_hoist(sympy.sympify(program.outputs[r]), slots) for r in outputs]
    loads = sorted({s.name[2:] for e in hoisted for s in e.free_symbols if _is_element(s)})
    role_of = {_name(r): r for r in [*program.inputs, *outputs]}
    names = {"e_" + v: "x_" + v for v in role_of}
    common, reduced = sympy.cse(hoisted, symbols=sympy.numbered_symbols("t"))
    kprint = _Printer(True, names)
    args = [names["e_" + v] for v in loads] + [f"c{i}" for i in range(len(slots))]
    lines = [f"def {name}({', '.join(args)}):"]
    lines += [f"    {sym} = {kprint(val)}" for sym, val in common]
    lines.append(f"    return {', '.join(kprint(e) for e in reduced)}")
    hprint = _Printer(False, {s: f"v[{s!r}]" for s in program.scalars})
    values = ", ".join(hprint(e) for e in slots)
    roles = ("param", "grad", *sorted(r for r in role_of.values() if r not in ("param", "grad")))
    return KernelText("\n".join(lines), roles, tuple(role_of[v] for v in loads), tuple(outputs),
                      len(slots), f"({values}{',' if len(slots) == 1 else ''})")


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
def {name}(table, chunks, slots, W: tl.constexpr, CH: tl.constexpr, BL: tl.constexpr,
{indent}ALIGNED: tl.constexpr, {dtypes}):
    pid = tl.program_id(0)
    row = table + tl.load(chunks + 2 * pid).to(tl.int64) * W
    start = tl.load(chunks + 2 * pid + 1).to(tl.int64) * CH
    n = tl.load(row + W - 1)
{pointers}
    if ALIGNED:
{aligned}
{scalars}
    stop = tl.minimum(n - start, CH)
    for off in range(0, stop, BL):
        idx = start + off + tl.arange(0, BL)
        if off + BL <= stop:
{full}
        else:
            mask = idx < n
{tail}
'''


def driver_text(name: str, math_name: str, k: KernelText) -> str:
    """The fixed multi-tensor driver around the math helper ``math_name``."""
    var = {r: _name(r) for r in k.roles}
    dtypes = ", ".join(f"T_{var[r]}: tl.constexpr" for r in k.roles)
    pointers = "\n".join(f"    p_{var[r]} = tl.load(row + {i}).to(tl.pointer_type(T_{var[r]}))"
                         for i, r in enumerate(k.roles))
    aligned = "\n".join(f"        p_{var[r]} = tl.multiple_of(p_{var[r]}, 16)" for r in k.roles)
    scalars = "\n".join(f"    c{i} = tl.load(slots + {i})" for i in range(k.n_slots)) or "    pass"
    call = ", ".join([f"x_{var[r]}" for r in k.loads] + [f"c{i}" for i in range(k.n_slots)])
    outs = ", ".join(f"o_{var[r]}" for r in k.outputs)

    def body(masked: bool) -> str:
        pad = " " * 12
        m = ", mask=mask, other=1.0" if masked else ""
        sm = ", mask=mask" if masked else ""
        lines = [f"{pad}x_{var[r]} = tl.load(p_{var[r]} + idx{m}).to(tl.float32)" for r in k.loads]
        lines.append(f"{pad}{outs} = {math_name}({call})")
        lines += [f"{pad}tl.store(p_{var[r]} + idx, store_cast(o_{var[r]}, T_{var[r]}){sm})"
                  for r in k.outputs]
        return "\n".join(lines)

    return DRIVER.format(name=name, indent=" " * (len(name) + 5), dtypes=dtypes,
                         pointers=pointers, aligned=aligned, scalars=scalars,
                         full=body(False), tail=body(True))
