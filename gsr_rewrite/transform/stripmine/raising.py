"""Paths of a run that raise: allowed where they raise before the run changes anything.

Every strip takes the same path through a run (its `if` tests read no tensor contents:
checker.py), so a path that raises does so in the first strip. Where nothing before it on that
path writes a tensor or changes an object, the first strip raises from the very state the
original raises from: a mode check (`else: raise ValueError(...)`) is such a path. A raise or a
failed `assert` after a write is not (the original raised with every element written, the first
strip with 1/strips of them).

A name the other branches bind, read after `else: assert False` (timm's Mars), is unbound on
that path (UnboundLocalError; under `python -O` the assert is gone but the read still raises)
when no binding of the name can reach the run (in a loop, an earlier iteration's would).
"""

from __future__ import annotations

import libcst as cst

from gsr_rewrite.analysis.dataflow import Node
from gsr_rewrite.analysis.local_lists import declared_outer
from gsr_rewrite.frontend.scopes import bound_names, loaded_names, param_list
from gsr_rewrite.transform.stripmine.checker import _Checker


def raises_unchanged(n: Node, inside: set[int], preds: dict[int, list[Node]],
                     checked: dict[int, _Checker]) -> bool:
    """Does nothing on a path of the run to n (n aside) write or change anything?"""
    return not _changed_before(n, inside, preds, checked)


def unbound_read_raises(name: str, n: Node, entry: Node, inside: set[int],
                        preds: dict[int, list[Node]], checked: dict[int, _Checker],
                        func: cst.FunctionDef) -> bool:
    """n reads `name` on a path of the run that has not bound it: is that read an
    UnboundLocalError raised before the run changed anything?"""
    if not _unbound_where_run_starts(name, entry, preds, func):
        return False
    # the run's nodes reached from its entry without binding the name, and of them, n's
    # ancestors: the path(s) on which n raises
    free: set[int] = set()
    todo = [entry]
    while todo:
        q = todo.pop()
        if id(q) in free or id(q) not in inside or name in q.eff.assigns:
            continue
        free.add(id(q))
        todo += q.succ
    return not _changed_before(n, free, preds, checked) and (
        n.node is None or _read_before_writing(n.node, name))


def _changed_before(n: Node, within: set[int], preds: dict[int, list[Node]],
                    checked: dict[int, _Checker]) -> bool:
    """Does a node of `within` on a path to n write a tensor, change an object or call
    anything?"""
    seen: set[int] = set()
    todo = [q for q in preds[id(n)] if id(q) in within]
    while todo:
        q = todo.pop()
        if id(q) in seen:
            continue
        seen.add(id(q))
        c = checked.get(id(q))
        if q.eff.writes or q.eff.weak or q.eff.persistent or q.eff.calls or q.eff.escapes or \
                (c is not None and (c.mutated or c.deleted)):
            return True
        todo += [x for x in preds[id(q)] if id(x) in within]
    return False


def _unbound_where_run_starts(name: str, entry: Node, preds: dict[int, list[Node]],
                              func: cst.FunctionDef) -> bool:
    """No binding of `name` reaches the run's entry: not a parameter, not declared global or
    nonlocal, and no node on a path to the entry binds it (an earlier iteration of a loop around
    the run is such a path; a function defined on one counts as binding what it binds, its
    `nonlocal` names too)."""
    if name in {p.name.value for p in param_list(func)} or name in declared_outer(func):
        return False
    seen: set[int] = set()
    todo = list(preds[id(entry)])
    while todo:
        q = todo.pop()
        if id(q) in seen:
            continue
        seen.add(id(q))
        header = q.node if q.kind != "entry" else None  # the parameters: checked above
        if name in q.eff.assigns or (header is not None and name in bound_names(header)):
            return False
        todo += preds[id(q)]
    return True


def _read_before_writing(stmt: cst.CSTNode, name: str) -> bool:
    """Is `name` evaluated before anything in `stmt` writes: is it an operand of every call that
    writes (`p.add_(update)`, `torch.mul(a, b, out=c)`), and of every item or attribute
    assignment's value?"""
    ok = True

    class _Writes(cst.CSTVisitor):
        def visit_Call(self, node: cst.Call) -> None:
            nonlocal ok
            f = node.func
            writes = (isinstance(f, cst.Attribute) and f.attr.value.endswith("_")) or any(
                a.keyword is not None and a.keyword.value == "out" for a in node.args)
            if writes and name not in loaded_names(node):  # the receiver and arguments come first
                ok = False

    stmt.visit(_Writes())
    if isinstance(stmt, (cst.Assign, cst.AugAssign)):
        targets = [t.target for t in stmt.targets] if isinstance(stmt, cst.Assign) else \
            [stmt.target]
        if any(not isinstance(t, cst.Name) for t in targets) and \
                name not in loaded_names(stmt.value):
            ok = False
    return ok
