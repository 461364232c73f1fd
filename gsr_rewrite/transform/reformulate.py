"""Stage 4b, reformulate: when no legal order exists, reorder with a proved rule from rules/.

Lion computes `update = m.lerp(g, 1 - b1)` while the gradient is still needed by the momentum
update `m.lerp_(g, 1 - b2)` that follows, so no buffer is dead for `update`. If the blocking
statement S is an EMA update of a state buffer the temporary reads, S can move up and the
temporary be recomputed from the *updated* state with the rule book's `ema-recover-old`
(m = (m_new - (1 - b)*g) / b, proved under b != 0). The statements between must not touch m or
g. The rule's condition becomes a run-time branch whose else branch is the original order:

    if (beta2) != 0 and (exp_avg.dtype in (torch.float32, torch.float64) and grad.dtype in (...)):
        exp_avg.lerp_(grad, 1 - beta2)
        update = grad.lerp(exp_avg, <coefficient of m_new>)
        ...
    else:
        <original statements>

A rule is proved in real arithmetic; the reordered form rounds differently, and only in float32
and float64 is that rounding "equal up to float rounding". In bf16 and fp16 it is coarse enough to
flip the sign of an element near 0, and Lion's `sign()` makes that a full `lr` step. So the branch
also asks, at run time, that every tensor the rule computes with is float32 or float64
(WIDE_DTYPES): any other dtype, known or not, runs the original order (exact).

The module is then planned again: in the first branch the gradient dies at `update`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import libcst as cst
import sympy

from gsr_rewrite.frontend.effects import buffers, dotted
from gsr_rewrite.frontend.locate import module_imports
from gsr_rewrite.frontend.syntax import subtree_ids
from gsr_rewrite.transform.plan import FunctionPlan, Placement

RULE = "ema-recover-old"
#: dtypes (attributes of torch) in which a reordered statement may run; default-deny: any other
#: dtype runs the original statements
WIDE_DTYPES = ("float32", "float64")


@dataclass
class Reorder:
    block_owner: cst.CSTNode  # the IndentedBlock / Module holding both lines
    first: cst.SimpleStatementLine  # the temporary's statement
    last: cst.SimpleStatementLine  # the EMA update S
    new_temp: cst.BaseStatement  # the temporary recomputed from the updated state
    condition: str  # the rule's condition, on host scalars
    tensors: tuple[str, ...]  # the variables the rule computes with (m and g)
    lists: bool  # they hold foreach tensor lists


class _Sym:
    """CST expression -> sympy, with m and g as symbols and scalars as opaque symbols."""

    def __init__(self, m: str, g: str) -> None:
        self.names = {m: sympy.Symbol("m"), g: sympy.Symbol("g")}
        self.scalars: dict[sympy.Symbol, str] = {}

    def scalar(self, node: cst.BaseExpression) -> sympy.Expr:
        code = cst.Module([]).code_for_node(node)
        for sym, c in self.scalars.items():
            if c == code:
                return sym
        sym = sympy.Symbol(f"s{len(self.scalars)}", real=True)
        self.scalars[sym] = code
        return sym

    def expr(self, node: cst.BaseExpression) -> sympy.Expr:
        if isinstance(node, cst.Name) and node.value in self.names:
            return self.names[node.value]
        if isinstance(node, cst.BinaryOperation) and isinstance(
                node.operator, (cst.Add, cst.Subtract, cst.Multiply, cst.Divide)):
            a, b = self.expr(node.left), self.expr(node.right)
            op = type(node.operator)
            return {cst.Add: a + b, cst.Subtract: a - b, cst.Multiply: a * b,
                    cst.Divide: a / b}[op]
        if isinstance(node, cst.Call):
            name = dotted(node.func) or ""
            if isinstance(node.func, cst.Attribute) and not name.startswith("torch."):
                recv = [node.func.value]
                method = node.func.attr.value
            else:
                recv, method = [], name.split(".")[-1]
            pos = [*recv, *[a.value for a in node.args if a.keyword is None]]
            kw = {a.keyword.value: a.value for a in node.args if a.keyword is not None}
            args = [self.expr(a) for a in pos]
            alpha = self.expr(kw["alpha"]) if "alpha" in kw else sympy.Integer(1)
            base = method.removeprefix("_foreach_").rstrip("_")
            if base == "lerp" and len(args) == 3:
                return args[0] + args[2] * (args[1] - args[0])
            if base in ("add", "sub") and len(args) == 2:
                return args[0] + alpha * args[1] if base == "add" else args[0] - alpha * args[1]
            if base == "mul" and len(args) == 2:
                return args[0] * args[1]
            if base == "div" and len(args) == 2:
                return args[0] / args[1]
            raise ValueError(f"not a linear op: {method}")
        if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
            return -self.expr(node.expression)
        if isinstance(node, (cst.Integer, cst.Float)):
            return sympy.Rational(node.value)  # exact, and prints as Python (1/2)
        if _mentions(node, set(self.names)):
            raise ValueError("tensor inside an unsupported expression")
        return self.scalar(node)

    def code(self, e: sympy.Expr) -> str:
        text = str(sympy.simplify(e))
        for sym, c in sorted(self.scalars.items(), key=lambda kv: -len(str(kv[0]))):
            text = text.replace(str(sym), f"({c})")
        return text


def _mentions(node: cst.CSTNode, names: set[str]) -> bool:
    found = False

    class _V(cst.CSTVisitor):
        def visit_Name(self, n: cst.Name) -> None:
            nonlocal found
            found |= n.value in names

    node.visit(_V())
    return found


def find_reorders(fp: FunctionPlan, owners: dict[int, cst.CSTNode]) -> list[Reorder]:
    """Reorders that would free a buffer for an unplaced named temporary in this function."""
    from gsr_rewrite.rulebook import load_rulebook

    rule = load_rulebook().get(RULE)
    if rule is None or fp.analysis.compiled:  # the rule did not prove: no reformulation
        return []
    found: list[Reorder] = []
    for p in fp.placements:
        if p.placed or p.node.line is None or p.alloc.in_comprehension:
            continue
        r = _try(p, fp, owners, rule)
        if r is not None and all(x.first is not r.first for x in found):
            found.append(r)
    return found


def _try(p: Placement, fp: FunctionPlan, owners: dict[int, cst.CSTNode],
         rule: object) -> Reorder | None:
    line = p.node.line
    assert line is not None
    small = line.body[0]
    if not (isinstance(small, cst.Assign) and small.value is p.alloc.node):
        return None  # only `name = <temporary>` statements
    owner = owners.get(id(line))
    body = list(getattr(owner, "body", []))
    i = next((k for k, s in enumerate(body) if s is line), None)
    if i is None:
        return None
    tensor_vars = [op.value for op in p.alloc.operands if isinstance(op, cst.Name)]
    for j in range(i + 1, len(body)):
        s = body[j]
        if not (isinstance(s, cst.SimpleStatementLine) and len(s.body) == 1
                and isinstance(s.body[0], cst.Expr) and isinstance(s.body[0].value, cst.Call)):
            continue
        call = s.body[0].value
        if not isinstance(call.func, cst.Attribute) and not (dotted(call.func) or "").startswith(
                "torch._foreach_"):
            continue
        target = call.func.value if isinstance(call.func, cst.Attribute) and not (
            dotted(call.func) or "").startswith("torch.") else call.args[0].value
        if not isinstance(target, cst.Name) or target.value not in tensor_vars:
            continue
        m = target.value
        others = [v for v in tensor_vars if v != m and _mentions(s, {v})]
        if len(others) != 1:
            continue
        g = others[0]
        between = body[i + 1:j]
        if any(_mentions(b, {m, g}) for b in between) or _may_touch(fp, between, p, m, g):
            return None
        return _reformulate(p, fp, owner, line, s, m, g, call, rule)  # type: ignore[arg-type]
    return None


def _may_touch(fp: FunctionPlan, between: Sequence[cst.BaseStatement], p: Placement, m: str,
               g: str) -> bool:
    """May the statements S moves above read or write m's buffer, or write g's, under other
    names (`self._track(p)` reading `self.state[p]["exp_avg"]`)? Helpers they call, objects
    the analysis does not model and code it does not follow may: they count as touching."""
    inside = set().union(*(subtree_ids(stmt) for stmt in between))
    m_bufs = buffers(p.node.pt_in.get(m, frozenset()))
    g_bufs = buffers(p.node.pt_in.get(g, frozenset()))
    for n in fp.analysis.flow.nodes:
        if n.node is None or id(n.node) not in inside:
            continue
        if n.eff.calls or n.eff.foreign or n.eff.escapes or \
                any(b in m_bufs for _, b, _ in n.eff.reads) or \
                any(b in m_bufs | g_bufs for _, b in n.eff.writes):
            return True
    return False


def _reformulate(p: Placement, fp: FunctionPlan, owner: cst.CSTNode,
                 line: cst.SimpleStatementLine, s: cst.SimpleStatementLine, m: str, g: str,
                 call: cst.Call, rule: object) -> Reorder | None:
    m_bufs, g_bufs = buffers(p.node.pt_in.get(m, frozenset())), buffers(p.node.pt_in.get(g,
                                                                                     frozenset()))
    if not (m_bufs and all(b.startswith("state:") for b in m_bufs) and g_bufs):
        return None
    sym = _Sym(m, g)
    try:
        temp = sym.expr(p.alloc.node)
        update = sym.expr(_as_out_of_place(call))
    except ValueError:
        return None
    ms, gs, mn = sympy.Symbol("m"), sympy.Symbol("g"), sympy.Symbol("m_new")
    b = sympy.expand(sympy.diff(update, ms))
    if b.has(ms) or b.has(gs) or sympy.simplify(update - (b * ms + (1 - b) * gs)) != 0:
        return None  # S is not an EMA m_new = b*m + (1-b)*g: the rule does not apply
    # the rule, instantiated: m = (m_new - (1 - b)*g) / b
    by_name = {"b": b, "g": gs, "m_new": mn}  # the rule's symbols carry assumptions: match names
    after = rule.after.subs({x: by_name[x.name]  # type: ignore[attr-defined]
                             for x in rule.after.free_symbols})  # type: ignore[attr-defined]
    new = sympy.expand(temp.subs(ms, after))
    c_m, c_g = new.coeff(mn), new.coeff(gs)
    if sympy.simplify(new - c_m * mn - c_g * gs) != 0:
        return None
    foreach = p.alloc.form == "foreach"
    if sympy.simplify(c_m + c_g - 1) == 0:  # a lerp from the (dying) gradient
        value = (f"torch._foreach_lerp({g}, {m}, {sym.code(c_m)})" if foreach
                 else f"{g}.lerp({m}, {sym.code(c_m)})")
    else:
        value = (f"torch._foreach_add(torch._foreach_mul({g}, {sym.code(c_g)}), {m}, "
                 f"alpha={sym.code(c_m)})" if foreach
                 else f"{g}.mul({sym.code(c_g)}).add_({m}, alpha={sym.code(c_m)})")
    assign = line.body[0]
    assert isinstance(assign, cst.Assign)
    new_line = line.with_changes(body=[assign.with_changes(value=cst.parse_expression(value))])
    return Reorder(owner, line, s, new_line, f"({sym.code(b)}) != 0", (m, g), foreach)


def _as_out_of_place(call: cst.Call) -> cst.Call:
    """`m.mul_(a).add_(g, alpha=c)` -> `m.mul(a).add(g, alpha=c)`: the value S stores in m."""

    class _T(cst.CSTTransformer):
        def leave_Attribute(self, o: cst.Attribute, u: cst.Attribute) -> cst.Attribute:
            name = u.attr.value
            return u.with_changes(attr=cst.Name(name[:-1])) if name.endswith("_") else u

    out = call.visit(_T())
    assert isinstance(out, cst.Call)
    return out


def wide_only(torch_name: str, tensors: Sequence[str], lists: bool) -> str:
    """Run-time test that every tensor (every tensor of every list) has a WIDE_DTYPES dtype."""
    dtypes = ", ".join(f"{torch_name}.{d}" for d in WIDE_DTYPES)
    if not lists:  # once per param on the for-loop path: no generator (~1 us less per param)
        return "(" + " and ".join(f"{t}.dtype in ({dtypes})" for t in tensors) + ")"
    items = ", ".join(f"*{t}" for t in tensors)
    return f"all(t.dtype in ({dtypes}) for t in ({items}))"


def _torch_name(module: cst.Module) -> str | None:
    """The module's top-level name for torch (`import torch`, `import torch as th`)."""
    names = {k for k, v in module_imports(module).items() if v == "torch"}
    return "torch" if "torch" in names else min(names, default=None)


def apply_reorders(module: cst.Module, reorders: list[Reorder]) -> cst.Module:
    """Each reorder as `if <condition> and <wide_only>: <reordered> else: <original>`; none
    where the module names no torch to test dtypes with."""
    torch_name = _torch_name(module)
    if torch_name is None:
        return module
    by_first = {id(r.first): r for r in reorders}
    tests = {id(r): f"{r.condition} and {wide_only(torch_name, r.tensors, r.lists)}"
             for r in reorders}

    class _T(cst.CSTTransformer):
        def _fix(self, body: list[cst.BaseStatement]) -> list[cst.BaseStatement]:
            out: list[cst.BaseStatement] = []
            k = 0
            while k < len(body):
                r = by_first.get(id(body[k]))
                if r is None:
                    out.append(body[k])
                    k += 1
                    continue
                j = next(x for x in range(k, len(body)) if body[x] is r.last)
                original = body[k:j + 1]
                moved = [r.last.with_changes(leading_lines=[]),
                         r.new_temp.with_changes(leading_lines=[]), *original[1:-1]]
                out.append(cst.If(
                    test=cst.parse_expression(tests[id(r)]),
                    body=cst.IndentedBlock(moved, header=cst.TrailingWhitespace(
                        whitespace=cst.SimpleWhitespace("  "),
                        comment=cst.Comment(f"# gsr: rule {RULE} (reordered; "
                                            f"{'/'.join(WIDE_DTYPES)} only)"))),
                    orelse=cst.Else(cst.IndentedBlock(
                        [original[0].with_changes(leading_lines=[]), *original[1:]])),
                    leading_lines=getattr(original[0], "leading_lines", ())))
                k = j + 1
            return out

        def leave_IndentedBlock(self, o: cst.IndentedBlock,
                                u: cst.IndentedBlock) -> cst.IndentedBlock:
            return u.with_changes(body=self._fix(list(o.body))) if any(
                id(s) in by_first for s in o.body) else u

    out = module.visit(_T())
    assert isinstance(out, cst.Module)
    return out


def block_owners(module: cst.Module) -> dict[int, cst.CSTNode]:
    """Statement line -> the indented block that holds it."""
    owners: dict[int, cst.CSTNode] = {}

    class _V(cst.CSTVisitor):
        def visit_IndentedBlock(self, node: cst.IndentedBlock) -> None:
            for stmt in node.body:
                owners[id(stmt)] = node

    module.visit(_V())
    return owners
