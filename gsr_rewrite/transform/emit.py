"""Stage 5, rewrite: apply the plan to the CST, statement by statement (assemble.py: the module).

Each rewritten statement is guarded at run time and keeps the original as its fallback:

    if _gsr.fits((grad,), (exp_avg_sq,)):
        denom = torch.sqrt(exp_avg_sq, out=grad).div_(bias_correction2_sqrt).add_(eps)
    else:
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)

The original classes and functions stay; `<Name>R(<Name>)` overrides only the methods whose code
changed, and rewritten module-level helpers are emitted as `<helper>_gsr`.
"""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst

from gsr_rewrite.frontend.catalog import OpCatalog
from gsr_rewrite.transform import RUNTIME
from gsr_rewrite.transform.plan import Placement

_SIMPLE = (cst.Name, cst.Attribute, cst.Call, cst.Subscript)


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def _expr(code: str) -> cst.BaseExpression:
    return cst.parse_expression(code)


def _paren(e: cst.BaseExpression) -> cst.BaseExpression:
    if isinstance(e, _SIMPLE) or e.lpar:
        return e
    return e.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def _paren_loose(e: cst.BaseExpression) -> cst.BaseExpression:
    """e in parentheses where it binds more loosely than a conditional expression's branch."""
    return _paren(e) if isinstance(e, (cst.IfExp, cst.Lambda)) else e


def _call(func: str | cst.BaseExpression, args: Sequence[cst.BaseExpression],
          kwargs: Sequence[cst.Arg] = ()) -> cst.Call:
    f = _expr(func) if isinstance(func, str) else func
    return cst.Call(f, [cst.Arg(a) for a in args] + [k.with_changes(comma=cst.MaybeSentinel.DEFAULT)
                                                     for k in kwargs])


def _method(recv: cst.BaseExpression, name: str, args: Sequence[cst.BaseExpression],
            kwargs: Sequence[cst.Arg] = ()) -> cst.Call:
    return _call(cst.Attribute(_paren(recv), cst.Name(name)), args, kwargs)


_TIGHT = cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""),
                        whitespace_after=cst.SimpleWhitespace(""))


def _out(kwargs: Sequence[cst.Arg], host: cst.BaseExpression) -> list[cst.Arg]:
    return [*kwargs, cst.Arg(host, keyword=cst.Name("out"), equal=_TIGHT)]


def operands_of(p: Placement, node: cst.BaseExpression) -> tuple[list[cst.BaseExpression],
                                                                 list[cst.Arg]]:
    """The operand expressions and keyword arguments of an allocating node, in analysis order."""
    if isinstance(node, cst.BinaryOperation):
        return [node.left, node.right], []
    if isinstance(node, cst.UnaryOperation):
        return [node.expression], []
    assert isinstance(node, cst.Call)
    pos = [a.value for a in node.args if a.keyword is None and not a.star]
    kw = [a for a in node.args if a.keyword is not None]
    if p.alloc.form == "method" or (p.alloc.form == "creation" and not pos):
        assert isinstance(node.func, cst.Attribute)
        return [node.func.value, *pos], kw
    return pos, kw


def emit_placement(p: Placement, node: cst.BaseExpression, cat: OpCatalog,
                   tensor_operands: list[bool]) -> cst.BaseExpression:
    ops, kw = operands_of(p, node)
    op = p.alloc.op
    host = ops[p.chain] if p.chain is not None else p.host
    assert host is not None
    if p.form == "creation":
        fill = cat.creation[op]
        if p.chain is not None:
            return ops[0]  # x.clone() of a dying x is x itself
        if fill == "copy":
            return _method(host, "copy_", [ops[0]])
        if fill == "zero":
            return _method(host, "zero_", [])
        if fill == "full":
            return _method(host, "fill_", [ops[1]])
        return _method(host, "fill_", [cst.Float("1.0")]) if fill == "one" else host
    spec = cat.elementwise[op]
    foreach = p.alloc.form == "foreach"
    if p.form == "inplace":
        if foreach:
            return _call(f"{RUNTIME}.foreach_inplace", [_expr(f"torch._foreach_{op}_"), *ops], kw)
        return _method(ops[0], spec.inplace, ops[1:], kw)
    if p.form == "swap":
        if foreach:
            return _call(f"{RUNTIME}.foreach_inplace", [_expr(f"torch._foreach_{op}_"), ops[1],
                                                        ops[0]])
        if p.alloc.form == "operator" and not tensor_operands[0]:  # `lr * t`, t dying
            return _call(f"{RUNTIME}.scalar_first_", [cst.SimpleString(f'"{op}"'), *ops], [])
        return _method(ops[1], spec.inplace, [ops[0]])
    if p.form == "into":
        return _call(f"{RUNTIME}.foreach_into", [host, _expr(f"torch._foreach_{op}_"), *ops], kw)
    if p.form == "foreach_out":
        return _call(f"{RUNTIME}.foreach_out", [_expr(f"torch.{op}"), host, *ops], kw)
    # "out": torch.OP(..., out=host); a scalar first operand needs the form torch itself uses
    if p.alloc.form == "operator" and len(ops) == 2 and not tensor_operands[0]:
        # `s OP t` with s not known to be a tensor: exactly as torch computes it, at run time
        # (runtime.scalar_first: a number, or a 0-d tensor `lr`, which rounds differently)
        return _call(f"{RUNTIME}.scalar_first", [cst.SimpleString(f'"{op}"'), *ops],
                     _out([], host))
    return _call(f"torch.{op}", ops, _out(kw, host))


class _ExpressionRewriter(cst.CSTTransformer):
    """Emits the placements (by id of their original node); with `branch` (an IfExp's id and
    "body" or "orelse") and a guard, that branch becomes `rewritten if guard else original`."""

    def __init__(self, placements: dict[int, Placement], cat: OpCatalog,
                 tensor_ops: dict[int, list[bool]],
                 branch: tuple[int, str] | None = None, guard: str = "") -> None:
        self.placements, self.cat, self.tensor_ops = placements, cat, tensor_ops
        self.branch, self.guard = branch, guard

    def leave_IfExp(self, original: cst.IfExp, updated: cst.IfExp) -> cst.BaseExpression:
        if self.branch is None or self.branch[0] != id(original):
            return updated
        name = self.branch[1]
        new, old = getattr(updated, name), getattr(original, name)
        guarded = cst.IfExp(test=_expr(self.guard), body=_paren_loose(new),
                            orelse=_paren_loose(old), lpar=[cst.LeftParen()],
                            rpar=[cst.RightParen()])
        return updated.with_changes(**{name: guarded})

    def _leave(self, original: cst.BaseExpression, updated: cst.BaseExpression
               ) -> cst.BaseExpression:
        p = self.placements.get(id(original))
        if p is None or not p.placed:
            return updated
        new = emit_placement(p, updated, self.cat, self.tensor_ops[id(original)])
        return new.with_changes(lpar=updated.lpar, rpar=updated.rpar) if updated.lpar and \
            not isinstance(new, _SIMPLE) else new

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        return self._leave(original, updated)

    def leave_BinaryOperation(self, original: cst.BinaryOperation,
                              updated: cst.BinaryOperation) -> cst.BaseExpression:
        return self._leave(original, updated)

    def leave_UnaryOperation(self, original: cst.UnaryOperation,
                             updated: cst.UnaryOperation) -> cst.BaseExpression:
        return self._leave(original, updated)


class Renamer(cst.CSTTransformer):
    """Renames the rewritten module helpers (`names`: F -> F_gsr) where they are named as
    variables (not attribute names such as `x.F`), and turns `self.ATTR(...)` into
    `F_gsr(...)` for the helpers `__init__` stores on self (`attrs`: ATTR -> F_gsr)."""

    def __init__(self, names: dict[str, str], attrs: dict[str, str] | None = None) -> None:
        self.names = names
        self.attrs = attrs or {}

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.Name:
        return updated.with_changes(value=self.names.get(updated.value, updated.value))

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute
                        ) -> cst.Attribute:
        return updated.with_changes(attr=original.attr)  # `x.F` is no reference to F

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        f = original.func
        if isinstance(f, cst.Attribute) and isinstance(f.value, cst.Name) and \
                f.value.value == "self" and f.attr.value in self.attrs:
            return updated.with_changes(func=cst.Name(self.attrs[f.attr.value]))
        return updated


def guard_expression(placed: list[Placement], leaves: list[tuple[str, bool, bool]]) -> str:
    """`_gsr.fits((hosts...), (like...))`, one call for tensors and one for tensor lists.

    leaves: (code, is_host, is_list) for every tensor the rewritten statement writes or combines.
    """
    parts = []
    wide = any(p.alloc.form == "foreach" and p.alloc.op in FOREACH_INPLACE_ROUNDS_DIFFERENTLY
               for p in placed)
    for lists in (False, True):
        hosts = [c for c, h, li in leaves if h and li == lists]
        like = [c for c, h, li in leaves if not h and li == lists and c not in hosts]
        if hosts or like:
            fn = "fits_lists" if lists else "fits"
            extra = ", wide=True" if lists and wide else ""
            parts.append(f"{RUNTIME}.{fn}({_tuple(hosts)}, {_tuple(like)}{extra})")
    parts += dict.fromkeys(p.condition for p in placed if p.condition)  # options it needs
    return " and ".join(parts)


#: foreach ops whose in-place form rounds differently from the out-of-place one in bf16 and fp16
#: on CPU (torch 2.13, measured: `_foreach_mul_(xs, 0.3)` vs `_foreach_mul(xs, 0.3)`, with a
#: scalar or a scalar list; 28 other forms of 21 ops were equal in all dtypes): their rewrites
#: run only on float32/float64 lists
FOREACH_INPLACE_ROUNDS_DIFFERENTLY = frozenset({"mul"})


def _tuple(items: list[str]) -> str:
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def rewrite_statement(line: cst.SimpleStatementLine, placements: list[Placement],
                      cat: OpCatalog, tensor_ops: dict[int, list[bool]],
                      guard: str, renamer: Renamer, comment: str) -> cst.BaseStatement:
    """The statement with its placements emitted under `guard`, the original its fallback: the
    guard sits in the conditional-expression branch that holds every placement when there is one
    (`g = grads[i] if not maximize else (grads[i].neg_() if GUARD else -grads[i])`: evaluated
    only when the branch runs, not once per param whatever `maximize` is), else the statement
    becomes `if GUARD: new  else: original`."""
    by_node = {id(p.alloc.node): p for p in placements}
    branch = _branch_holding(line.body[0], set(by_node))
    if branch is not None and _code(_expr(guard).visit(renamer)) == guard:  # type: ignore[arg-type]
        inline = line.body[0].visit(_ExpressionRewriter(by_node, cat, tensor_ops, branch, guard))
        out = cst.SimpleStatementLine([inline]).visit(renamer)  # type: ignore[list-item]
        assert isinstance(out, cst.SimpleStatementLine)
        old = line.trailing_whitespace.comment
        note = f"{old.value}  # gsr: {comment}" if old else f"# gsr: {comment}"
        return out.with_changes(leading_lines=line.leading_lines, trailing_whitespace=(
            cst.TrailingWhitespace(whitespace=cst.SimpleWhitespace("  "),
                                   comment=cst.Comment(note))))
    new_small = line.body[0].visit(_ExpressionRewriter(by_node, cat, tensor_ops))
    new_line = cst.SimpleStatementLine([new_small]).visit(renamer)  # type: ignore[list-item]
    assert isinstance(new_line, cst.SimpleStatementLine)
    fallback = line.visit(renamer)
    assert isinstance(fallback, cst.SimpleStatementLine)
    fallback = fallback.with_changes(leading_lines=[])
    return cst.If(
        test=_expr(guard),
        body=cst.IndentedBlock([new_line], header=cst.TrailingWhitespace(
            whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment(f"# gsr: {comment}"))),
        orelse=cst.Else(cst.IndentedBlock([fallback])),
        leading_lines=line.leading_lines,
    )


#: expressions that open a scope of their own (their names are not the statement's)
INNER_SCOPES = (cst.Lambda, cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)


def _branch_holding(stmt: cst.CSTNode, nodes: set[int]) -> tuple[int, str] | None:
    """(id of an IfExp, "body" | "orelse"): the innermost conditional-expression branch of `stmt`
    that holds every node of `nodes`, outside any lambda or comprehension (a guard there would run
    in another scope, or once per element); None when there is none or `stmt` binds a name with
    `:=` (the guard would read names before the statement's own bindings are settled)."""
    chains: list[tuple[object, ...]] = []
    blocked = [False]
    branches: dict[int, tuple[int, str]] = {}
    stack: list[object] = []  # per visited node: its branch, "scope", or None

    class _Walk(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            if isinstance(node, cst.IfExp):
                branches[id(node.body)] = (id(node), "body")
                branches[id(node.orelse)] = (id(node), "orelse")
            blocked[0] |= isinstance(node, cst.NamedExpr)
            stack.append("scope" if isinstance(node, INNER_SCOPES) else branches.get(id(node)))
            if id(node) in nodes:
                chains.append(tuple(e for e in stack if e is not None))
            return True

        def on_leave(self, original_node: cst.CSTNode) -> None:
            stack.pop()

    stmt.visit(_Walk())
    if blocked[0] or len(chains) != len(nodes):
        return None
    common: list[object] = []
    for entries in zip(*chains, strict=False):
        if len(set(entries)) != 1 or entries[0] == "scope":
            break
        common.append(entries[0])
    return common[-1] if common else None  # type: ignore[return-value]
