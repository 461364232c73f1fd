"""Chunks of whole tensors: which strip-mined runs may also go over sub-lists of their tensor
lists, and the `part` calls their emission needs.

A strip keeps every list's length, so a run may pair its lists with anything positionally (scalar
lists, `len`, indices). A chunk is positions [start, stop) of every list: exact only when the run
touches its lists through torch foreach calls alone, which pair position j with position j and
nothing else. So a run takes chunks (`_gsr.strips(K, ..., chunks=True)`) when every strip list
(a sliced list, or a name the run binds to one) appears only

- as an argument of a `torch._foreach_*` call (the checker has already required those to be
  element by element), or of `cast(T, xs)`;
- as the whole value of an assignment to one name, or in `del`;

and the run has no loop and reads no list item. Every other argument of a foreach call that takes
a strip list is wrapped in `_gsr.part(arg, piece)`: a list with one item per position (NAdam's
`mus`, a scalar list of step sizes) is cut to the chunk's positions; a number or a tensor passes
as it is. `runtime.strips` still decides at run time: chunks only when every value is a list of
one length.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet

import libcst as cst

from gsr_rewrite.analysis.dataflow import Node
from gsr_rewrite.frontend.scopes import VariableNames
from gsr_rewrite.frontend.syntax import dotted

_FOREACH = "torch._foreach_"


def chunk_blocker(nodes: Sequence[Node], sliced: Iterable[str], items: bool,
                  helpers: AbstractSet[str] = frozenset()) -> tuple[str | None, frozenset[str]]:
    """(why the run may not go over chunks of whole tensors, None when it may; the names that
    hold strip lists in it). `nodes`: its flow nodes; `sliced`: the lists `strips` cuts;
    `helpers`: the calls that take and give lists position by position, as foreach calls do
    (helpers.position_wise)."""
    lists = _strip_lists(nodes, set(sliced), helpers)
    if items:
        return "it reads items of lists it does not cut", lists
    indices: set[str] = set()
    for n in nodes:  # `i` of `for i in range(len(xs))` and `for i, x in enumerate(xs)`
        if n.kind == "for" and isinstance(n.node, cst.For):
            _iteration(n.node.iter, n.node.target, lists, set(), indices)
    indices -= {k for n in nodes if n.kind != "for" for k in n.eff.assigns}
    for n in nodes:
        if n.node is None or n.kind in ("entry", "exit", "join", "latch"):
            continue
        why = _loop_blocker(n.node, lists, indices, helpers) if n.kind == "for" else \
            _statement_blocker(n.node, lists, indices, helpers)
        if why is not None:
            return why, lists
    return None, lists


def _strip_lists(nodes: Sequence[Node], sliced: set[str],
                 helpers: AbstractSet[str]) -> frozenset[str]:
    """The sliced lists, and the names the run binds to lists made from them, position by
    position (foreach results, `cast`, `list(xs)`, comprehensions over them)."""
    lists = set(sliced)
    grew = True
    while grew:
        grew = False
        for n in nodes:
            s = n.node
            if isinstance(s, cst.Assign) and _list_value(s.value, lists, set(), set(),
                                                         helpers=helpers):
                new = {t.target.value for t in s.targets if isinstance(t.target, cst.Name)}
                grew = grew or not new <= lists
                lists |= new
    return frozenset(lists)


def _loop_blocker(loop: cst.CSTNode, lists: frozenset[str], indices: set[str],
                  helpers: AbstractSet[str]) -> str | None:
    assert isinstance(loop, cst.For)
    allowed: set[int] = set()
    if not _iteration(loop.iter, loop.target, lists, allowed, set(), helpers):
        return f"`for {_code(loop.target)} in {_code(loop.iter)}` is not over its lists"
    if any(x.value in lists for x in _names(loop.target)):
        return f"`{_code(loop.target)}` is a strip list and an item of one"
    return _unmarked(loop.iter, lists, indices, allowed, set())


def _statement_blocker(s: cst.CSTNode, lists: frozenset[str], indices: set[str],
                       helpers: AbstractSet[str]) -> str | None:
    allowed: set[int] = set()
    targets: set[int] = set()
    if isinstance(s, cst.AnnAssign) and s.value is None:
        pass  # `xs: list[Tensor]` declares, binds nothing
    elif isinstance(s, (cst.Assign, cst.AnnAssign)):
        goal = [t.target for t in s.targets] if isinstance(s, cst.Assign) else [s.target]
        holds = s.value is not None and _list_value(s.value, lists, allowed, indices,
                                                    helpers=helpers)
        for t in goal:
            if not isinstance(t, cst.Name):
                if holds:
                    return f"`{_code(s)}` unpacks or stores a strip list"
                continue
            targets.add(id(t))
            if (t.value in lists) != holds:
                return f"`{t.value}` holds a strip list and another value"
    elif isinstance(s, (cst.Expr, cst.Return)) and s.value is not None:  # (a helper returns)
        _list_value(s.value, lists, allowed, indices, helpers=helpers)
    elif isinstance(s, cst.Del):
        allowed |= {id(x) for x in _names(s.target) if x.value in lists}
    elif isinstance(s, cst.AugAssign) and isinstance(s.target, cst.Name) and \
            s.target.value in lists:
        return f"`{_code(s)}` changes a strip list's length"
    return _unmarked(s, lists, indices, allowed, targets)


def _unmarked(s: cst.CSTNode, lists: frozenset[str], indices: set[str], allowed: set[int],
              targets: set[int]) -> str | None:
    """The first strip list or position index in `s` used other than as `allowed` marks, plus
    the items `xs[i]` of strip lists at a position index, which are one tensor wherever."""
    for sub in _subscripts(s):
        idx = sub.slice[0].slice.value if len(sub.slice) == 1 and \
            isinstance(sub.slice[0].slice, cst.Index) else None
        if isinstance(sub.value, cst.Name) and sub.value.value in lists and \
                isinstance(idx, cst.Name) and idx.value in indices:
            allowed |= {id(sub.value), id(idx)}
    for x in _names(s):
        if (x.value in lists or x.value in indices) and id(x) not in allowed | targets:
            what = "strip list" if x.value in lists else "list position"
            return f"the {what} `{x.value}` is used other than position by position " \
                   f"(`{_code(s).strip()}`)"
    return None


def _list_value(e: cst.BaseExpression, lists: AbstractSet[str], allowed: set[int],
                indices: set[str], runtime: str = "",
                helpers: AbstractSet[str] = frozenset()) -> bool:
    """Is `e` a strip list, where one may be? Marks the names it reads that way in `allowed`.
    With `runtime` (emitted code), the placements' calls count too: `foreach_inplace(op_,
    target, ...)` is its target, `foreach_into(host, ...)` and `foreach_out(op, host, ...)`
    their host; calls of `helpers` count as foreach calls."""
    if isinstance(e, cst.Name):
        if e.value in lists:
            allowed.add(id(e))
            return True
        return False
    if isinstance(e, cst.Call):
        fn = dotted(e.func) or ""
        if fn.startswith(_FOREACH) or fn in helpers:
            return any([_list_value(a.value, lists, allowed, indices, runtime, helpers)
                        for a in e.args if a.star == ""])
        result = {f"{runtime}.foreach_inplace": 1, f"{runtime}.foreach_into": 0,
                  f"{runtime}.foreach_out": 1}.get(fn) if runtime else None
        if result is not None and len(e.args) > result:
            return _list_value(e.args[result].value, lists, allowed, indices, runtime)
        if fn.rpartition(".")[2] == "cast" and len(e.args) == 2:
            return _list_value(e.args[1].value, lists, allowed, indices, runtime)
        if fn in ("list", "tuple") and len(e.args) == 1 and e.args[0].keyword is None:
            return _list_value(e.args[0].value, lists, allowed, indices, runtime)
    if isinstance(e, (cst.ListComp, cst.GeneratorExp)):
        f: cst.CompFor | None = e.for_in
        marks: set[int] = set()
        while f is not None:  # `[g.sign() for g in xs]`: one item per position, no filter
            if f.ifs or not _iteration(f.iter, f.target, lists, marks, indices, helpers):
                return False
            f = f.inner_for_in
        allowed |= marks
        return True
    return False


def _iteration(it: cst.BaseExpression, target: cst.BaseExpression, lists: AbstractSet[str],
               allowed: set[int], indices: set[str],
               helpers: AbstractSet[str] = frozenset()) -> bool:
    """`for target in it` visits the positions of strip lists in order: `xs`, `zip(xs, ys)`,
    `enumerate(<one of these>)`, `range(len(xs))` (the index names join `indices`)."""
    if isinstance(it, cst.Name):
        return _list_value(it, lists, allowed, indices, helpers=helpers)
    if not isinstance(it, cst.Call):
        return False
    fn = dotted(it.func)
    args = [a.value for a in it.args if a.keyword is None]
    keywords = [a for a in it.args if a.keyword is not None]
    if fn == "zip" and args and all(a.keyword.value == "strict" for a in keywords
                                    if a.keyword is not None):
        return all([_list_value(a, lists, allowed, indices) for a in args])
    if fn == "enumerate" and len(args) == 1 and not keywords and \
            isinstance(target, cst.Tuple) and len(target.elements) == 2 and \
            isinstance(target.elements[0].value, cst.Name):
        indices.add(target.elements[0].value.value)
        return _iteration(args[0], target.elements[1].value, lists, allowed, indices)
    if fn == "range" and len(args) == 1 and not keywords and isinstance(target, cst.Name) and \
            isinstance(args[0], cst.Call) and dotted(args[0].func) == "len" and \
            len(args[0].args) == 1:
        indices.add(target.value)
        return _list_value(args[0].args[0].value, lists, allowed, indices)
    return False


def _subscripts(node: cst.CSTNode) -> list[cst.Subscript]:
    found: list[cst.Subscript] = []

    class _V(cst.CSTVisitor):
        def visit_Subscript(self, x: cst.Subscript) -> None:
            found.append(x)

    node.visit(_V())
    return found


def _names(node: cst.CSTNode) -> list[cst.Name]:
    """The Name nodes under `node` that name variables (not attribute or keyword names)."""
    found: list[cst.Name] = []

    class _V(VariableNames):
        def visit_Name(self, x: cst.Name) -> None:
            found.append(x)

    node.visit(_V())
    return found


class PartWrapper(cst.CSTTransformer):
    """In a chunked run's (renamed) body: every argument of a foreach call that is not a strip
    list, where the call takes one, becomes `runtime.part(arg, piece)`. The placements' forms
    count as foreach calls: `foreach_inplace(op_, target, *args)` and
    `foreach_into(host, op_, first, *args)` / `foreach_out(op, host, *operands)` (their host is
    guarded by `fits_lists`, which a list of another length fails)."""

    def __init__(self, strip_values: AbstractSet[str], runtime: str, piece: str,
                 helpers: AbstractSet[str] = frozenset()) -> None:
        self.names, self.runtime, self.piece = strip_values, runtime, piece
        self.helpers = helpers

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        fn = dotted(updated.func) or ""
        if fn.startswith(_FOREACH) or fn in self.helpers:
            first = 0
        elif fn == f"{self.runtime}.foreach_inplace":
            first = 1
        elif fn in (f"{self.runtime}.foreach_into", f"{self.runtime}.foreach_out"):
            first = 2
        else:
            return updated
        args = list(updated.args)
        strip = [_list_value(a.value, self.names, set(), set(), self.runtime, self.helpers)
                 for a in args]
        if not any(strip[first:]):
            return updated
        part = cst.parse_expression(f"{self.runtime}.part")
        comma = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
        for i in range(first, len(args)):
            if not strip[i]:
                call = cst.Call(part, [cst.Arg(args[i].value, comma=comma),
                                       cst.Arg(cst.Name(self.piece))])
                args[i] = args[i].with_changes(value=call)
        return updated.with_changes(args=args)


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)
