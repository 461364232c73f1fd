"""Root reads hoisted out of a strip-mined run: `p.grad` of a param p and `state["k"]` of a
param's state dict, read inside the run, are read once before it into a name that the strips
slice (`p_grad = p.grad`, then `p_grad_strip` in the run), as if the code had bound the name
itself. Exact when nothing in the run rebinds or changes `p` or `state` (checked with the rest
of the region, `region_checks`): the read then gives the same tensor before the run as where
the original reads it. Attribute reads of `.grad` cannot raise; a state item read that is not
on every path through the run could (a missing key), so those are hoisted only from the run's
top-level statements."""

from __future__ import annotations

import re

import libcst as cst

from gsr_rewrite.analysis.dataflow import Node
from gsr_rewrite.analysis.transfer import read_parts
from gsr_rewrite.frontend.records import OPAQUE
from gsr_rewrite.frontend.syntax import const_key
from gsr_rewrite.transform.emit import INNER_SCOPES
from gsr_rewrite.transform.stripmine.checker import _code, _flat_targets
from gsr_rewrite.transform.stripmine.region import _Refuse

#: a hoisted read stands for a name in the region's checks: this prefix keeps it apart from
#: every Python name (it is replaced by a fresh one where the run is emitted)
PLACEHOLDER = "@"


def is_placeholder(name: str) -> bool:
    return name.startswith(PLACEHOLDER)


def hoisted_reads(nodes: list[Node], top: set[int]) -> tuple[dict[str, str], set[str]]:
    """(code of each root read the run makes -> its placeholder, the names those reads go
    through); _Refuse when some root read cannot be hoisted. `top`: ids of the run's top-level
    statements."""
    paths: dict[str, str] = {}
    roots: set[str] = set()
    for n in nodes:
        if not n.eff.rooted or n.node is None:
            continue
        if "param" in n.eff.rooted:
            raise _Refuse("it reaches the parameter list (`group[\"params\"]`) inside the run")
        found = _root_reads(n, at_top=n.line is not None and id(n.line) in top)
        explained = {"grad" if key is None else f"state:{key}" for _, _, key in found}
        missing = sorted(n.eff.rooted - explained)
        if missing:
            raise _Refuse(f"it reaches {_role(missing[0])} inside the run other than through "
                          "`p.grad` or `state[\"key\"]` of a name")
        for code, root, _ in found:
            paths[code] = PLACEHOLDER + code
            roots.add(root)
    for n in nodes:  # the replacement stops at inner scopes, where `p` may be another name
        if n.node is not None and any(_in_scope(part, set(paths)) for part in read_parts(n.node)):
            raise _Refuse("a read hoisted out of the run is also spelled inside a comprehension or "
                          "lambda, where its name may be another")
    return paths, roots


def _in_scope(part: cst.CSTNode, codes: set[str]) -> bool:
    """Whether a comprehension or lambda within `part` spells one of `codes`."""
    hit = [False]

    class _Find(cst.CSTVisitor):
        def __init__(self) -> None:
            self.depth = 0

        def on_visit(self, node: cst.CSTNode) -> bool:
            self.depth += isinstance(node, INNER_SCOPES)
            if self.depth and isinstance(node, (cst.Attribute, cst.Subscript)) and \
                    _code(node) in codes:
                hit[0] = True
            return not hit[0]

        def on_leave(self, original_node: cst.CSTNode) -> None:
            self.depth -= isinstance(original_node, INNER_SCOPES)

    part.visit(_Find())
    return hit[0]


def _role(b: str) -> str:
    return "the gradient" if b == "grad" else f"state '{b[6:]}'" if b.startswith("state:") else b


def _root_reads(n: Node, at_top: bool) -> list[tuple[str, str, str | None]]:
    """(code, root name, state key or None for `.grad`) of each root read of flow node n."""
    targets = {id(t) for t in _targets(n.node)}  # type: ignore[arg-type]
    found: list[tuple[str, str, str | None]] = []

    class _Walk(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            if isinstance(node, INNER_SCOPES):
                if _mentions_roots(node, n):
                    raise _Refuse("it reaches the gradient or optimizer state inside a "
                                  "comprehension or lambda of the run")
                return False
            read = _root_read(node, n)
            if read is None:
                return True
            if id(node) in targets:
                raise _Refuse(f"the run assigns `{_code(node)}`")
            if read[1] is not None and not at_top:
                raise _Refuse(f"`{_code(node)}` is read only on some paths through the run: "
                              "read before it, a missing key would raise")
            found.append((_code(node), read[0], read[1]))
            return False

    parts = read_parts(n.node)  # type: ignore[arg-type]
    for part in parts:
        part.visit(_Walk())
    return found


def _root_read(node: cst.CSTNode, n: Node) -> tuple[str, str | None] | None:
    """(root name, state key or None) when node is `x.grad` of a param x or `s["k"]` of a state
    dict s; _Refuse for other `.grad` reads and state items (computed keys, no name)."""
    if isinstance(node, cst.Attribute) and node.attr.value == "grad":
        base = node.value
        if not isinstance(base, cst.Name):
            raise _Refuse(f"it reads `{_code(node)}` inside the run, of an object that may not "
                          "be a parameter")
        pt = n.pt_in.get(base.value, frozenset())
        if "param" in pt and OPAQUE not in pt:
            return base.value, None
        if "param" in pt or OPAQUE in pt:
            raise _Refuse(f"it reads `{_code(node)}` inside the run, of an object that may not "
                          "be a parameter")
        return None
    if isinstance(node, cst.Subscript) and isinstance(node.value, cst.Name) and \
            "%pstate" in n.pt_in.get(node.value.value, frozenset()):
        key = const_key(node)
        if key is None:
            raise _Refuse(f"`{_code(node)}` reads optimizer state with a computed key")
        return node.value.value, key
    return None


def _mentions_roots(scope: cst.CSTNode, n: Node) -> bool:
    hit = [False]

    class _Any(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            if isinstance(node, cst.Attribute) and node.attr.value == "grad" or \
                    isinstance(node, cst.Subscript) and isinstance(node.value, cst.Name) and \
                    "%pstate" in n.pt_in.get(node.value.value, frozenset()):
                hit[0] = True
            return not hit[0]

    scope.visit(_Any())
    return hit[0]


def _targets(s: cst.CSTNode) -> list[cst.CSTNode]:
    """The expressions a statement assigns or deletes, flattened out of tuples and lists."""
    if isinstance(s, cst.Assign):
        return [x for t in s.targets for x in _flat_targets(t.target)]
    if isinstance(s, (cst.AugAssign, cst.AnnAssign, cst.Del)):
        return list(_flat_targets(s.target))
    return []


def hoisted_name(code: str) -> str:
    """A readable base for the name a read is hoisted into: `p.grad` -> `p_grad`,
    `state["exp_avg"]` -> `state_exp_avg`."""
    return re.sub(r"\W+", "_", code).strip("_") or "hoisted"


class ReadReplacer(cst.CSTTransformer):
    """Replaces the hoisted reads (by code) with names; never inside a comprehension or lambda
    (`hoisted_reads` refuses runs that spell a hoisted read there)."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def on_visit(self, node: cst.CSTNode) -> bool:
        return not isinstance(node, INNER_SCOPES) and super().on_visit(node)

    def _swap(self, updated: cst.BaseExpression) -> cst.BaseExpression:
        name = self.names.get(_code(updated))
        return cst.Name(name, lpar=updated.lpar, rpar=updated.rpar) if name else updated

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute
                        ) -> cst.BaseExpression:
        return self._swap(updated)

    def leave_Subscript(self, original: cst.Subscript, updated: cst.Subscript
                        ) -> cst.BaseExpression:
        return self._swap(updated)
