"""What the run-time guard of a rewritten statement reads: the tensors it writes or combines
(`statement_leaves`), each as an expression the guard may evaluate again before the statement.

The guard (`_gsr.fits`) reads only metadata: shape, dtype, device, layout and storage. An operand
that is a plain name, attribute or subscript is read again as it is. Other operands are read
through an expression with the same metadata and no side effect (`guard_leaf`):

- an in-place method of a tensor returns its receiver (`exp_avg_var.add_(eps)` is
  `exp_avg_var`, whose metadata the in-place op does not change): the guard reads the receiver
  and the in-place op still runs once, in the statement;
- a view that copies nothing (`x.view(-1)`, `x.t()`, with plain arguments) of such a leaf is
  evaluated again: a new view of the same storage, nothing written, nothing allocated but the
  view's header. Only for operands that are read: a host written through a view stays
  unguarded (refused), as before.

Anything else (an unknown call, a method that may copy such as `contiguous()`, an index computed
by a call) cannot be guarded: the statement stays as it is."""

from __future__ import annotations

import libcst as cst

from gsr_rewrite.frontend.catalog import OpCatalog, load_catalog
from gsr_rewrite.transform.plan import Placement

#: view methods that never copy and never write (not `reshape`, `flatten`, `contiguous`, `to`,
#: `float()`...: they may copy their receiver, a parameter-sized allocation in the guard)
_PURE_VIEWS = frozenset({"view", "view_as", "t", "transpose", "permute", "squeeze", "unsqueeze",
                         "narrow", "select", "unflatten", "expand", "expand_as"})


def code_of(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def is_pure(e: cst.BaseExpression) -> bool:
    """A name, an attribute of one, or a subscript of one by a name or constant."""
    if isinstance(e, cst.Name):
        return True
    if isinstance(e, cst.Attribute):
        return is_pure(e.value)
    if isinstance(e, cst.Subscript):
        idx = [el.slice for el in e.slice]
        return is_pure(e.value) and all(
            isinstance(i, cst.Index) and isinstance(i.value, (cst.Name, cst.Integer,
                                                              cst.SimpleString)) for i in idx)
    return False


def _plain_argument(e: cst.BaseExpression) -> bool:
    if isinstance(e, (cst.Integer, cst.Name)):
        return True
    if isinstance(e, cst.UnaryOperation) and isinstance(e.operator, cst.Minus):
        return isinstance(e.expression, cst.Integer)
    if isinstance(e, (cst.Tuple, cst.List)):
        return all(not isinstance(el, cst.StarredElement) and _plain_argument(el.value)
                   for el in e.elements)
    return False


def guard_leaf(e: cst.BaseExpression, cat: OpCatalog, views: bool = True
               ) -> cst.BaseExpression | None:
    """An expression with e's metadata that the guard may evaluate before e's statement without
    any effect, or None (see the module doc). Without `views`, no view (a host is written: it
    is the dying operand itself, or the receiver of in-place ops on it)."""
    if is_pure(e):
        return e
    if not (isinstance(e, cst.Call) and isinstance(e.func, cst.Attribute)):
        return None
    m = e.func.attr.value
    if m in cat.inplace_kill or cat.inplace_base(m) is not None:  # returns its receiver
        return guard_leaf(e.func.value, cat, views)
    if views and m in _PURE_VIEWS and m in cat.view and all(
            not a.star and (a.keyword is None or a.keyword.value == "dim") and
            _plain_argument(a.value) for a in e.args):
        recv = guard_leaf(e.func.value, cat)
        if recv is None:
            return None
        return e.with_changes(func=e.func.with_changes(value=recv), lpar=[], rpar=[])
    return None


def statement_leaves(placements: list[Placement], cat: OpCatalog | None = None
                     ) -> list[tuple[str, bool, bool]] | None:
    """(code, is_host, is_list) of every tensor a rewritten statement writes or combines, as the
    guard reads it, or None when one of them cannot be read again (see `guard_leaf`)."""
    cat = cat or load_catalog()
    leaves: list[tuple[str, bool, bool]] = []
    by_node = {id(p.alloc.node): p for p in placements}

    def inputs(p: Placement) -> list[cst.BaseExpression]:
        """Tensor inputs of p, looking through nested temporaries it consumes."""
        out: list[cst.BaseExpression] = []
        for k, op in enumerate(p.alloc.operands):
            inner = by_node.get(id(op))
            if inner is not None:
                out += inputs(inner)
            elif p.tensor_operands and p.tensor_operands[k]:
                out.append(op)
        return out

    for p in placements:
        if not p.placed:
            continue
        lists = p.alloc.form == "foreach"
        hosts = [p.host] if p.host is not None else []
        if p.chain is not None and not p.nested_operands[p.chain]:
            hosts.append(p.alloc.operands[p.chain])
        others = [op for op in inputs(p) if op not in hosts]
        for e, is_host in [*((h, True) for h in hosts), *((o, False) for o in others)]:
            leaf = guard_leaf(e, cat, views=not is_host) if not lists else \
                (e if is_pure(e) else None)
            if leaf is None:
                return None
            item = (code_of(leaf), is_host, lists)
            if item not in leaves:
                leaves.append(item)
    return leaves
