"""Small readers of libcst syntax that the evaluator and the passes after it share: dotted names,
the names an expression mentions, constant subscript keys, the `for ... in` clauses of a
comprehension, the nodes below a node."""

from __future__ import annotations

import libcst as cst


def dotted(node: cst.BaseExpression) -> str | None:
    """`torch._foreach_add_` -> "torch._foreach_add_"; None unless names and attributes."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted(node.value)
        return None if base is None else f"{base}.{node.attr.value}"
    return None


def const_key(node: cst.Subscript) -> str | None:
    """`d["k"]` -> "k"; None unless the subscript is one string constant."""
    if len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index):
        v = node.slice[0].slice.value
        if isinstance(v, cst.SimpleString):
            return str(v.evaluated_value)
    return None


def for_ins(f: cst.CompFor) -> list[cst.CompFor]:
    """The `for ... in` clauses of a comprehension, outermost first."""
    out = [f]
    while f.inner_for_in is not None:
        f = f.inner_for_in
        out.append(f)
    return out


def names_in(node: cst.CSTNode) -> set[str]:
    """Every name `node` mentions (loaded, stored, attribute names included)."""
    found: set[str] = set()

    class _V(cst.CSTVisitor):
        def visit_Name(self, n: cst.Name) -> None:
            found.add(n.value)

    node.visit(_V())
    return found


_SUBTREES: dict[int, tuple[cst.CSTNode, frozenset[int]]] = {}  # node -> ids below it (a cache)


def subtree_ids(node: cst.CSTNode) -> frozenset[int]:
    """The ids of `node` and every node below it (cached by node)."""
    cached = _SUBTREES.get(id(node))
    if cached is not None and cached[0] is node:
        return cached[1]
    ids: set[int] = set()

    class _V(cst.CSTVisitor):
        def on_visit(self, x: cst.CSTNode) -> bool:
            ids.add(id(x))
            return True

    node.visit(_V())
    if len(_SUBTREES) > 4096:  # bounded: it keeps nodes alive
        _SUBTREES.clear()
    _SUBTREES[id(node)] = (node, frozenset(ids))
    return _SUBTREES[id(node)][1]


def const_index(node: cst.Subscript) -> int | None:
    if len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index):
        v = node.slice[0].slice.value
        if isinstance(v, cst.Integer):
            return int(v.evaluated_value)
    return None


def adds_axis(node: cst.Subscript) -> bool:
    """`x[None]`, `x[..., None]`: a 0-d tensor indexed so has dimensions."""
    return any(isinstance(el.slice, cst.Index) and isinstance(el.slice.value, cst.Name) and
               el.slice.value.value == "None" for el in node.slice)


def target_names(t: cst.BaseExpression) -> list[str]:
    if isinstance(t, cst.Name):
        return [t.value]
    if isinstance(t, (cst.Tuple, cst.List)):
        return [n for el in t.elements for n in target_names(el.value)]
    return []


def tuple_leaves(e: cst.BaseExpression) -> list[cst.BaseExpression]:
    """`e` and, when it is a tuple, its elements' leaves (`(n.device, n.dtype)` is not a leaf)."""
    if isinstance(e, cst.Tuple):
        return [e, *(x for el in e.elements for x in tuple_leaves(el.value))]
    return [e]


def reads_attributes_by_name(node: cst.CSTNode) -> bool:
    """`node` names a gradient attribute (`.grad`, `._grad`) or reaches attributes by a
    computed name (`getattr`, `vars`, `attrgetter`)."""
    found: list[cst.CSTNode] = []

    class _V(cst.CSTVisitor):
        def visit_Attribute(self, n: cst.Attribute) -> None:
            found.extend([n] if n.attr.value in ("grad", "_grad") else [])

        def visit_Name(self, n: cst.Name) -> None:
            found.extend([n] if n.value in ("getattr", "vars", "attrgetter") else [])

    node.visit(_V())
    return bool(found)
