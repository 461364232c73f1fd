"""Points-to (forward) and content liveness (backward) over the control-flow graph of one function.

The graph is built in cfg.py; what one node does (the transfer function) is in transfer.py.

Liveness facts are pairs (variable, buffer): "the current contents of `buffer` may still be read
through `variable`". Rebinding a variable kills its pairs; overwriting every element of a buffer
(`copy_`, `zero_`, `out=`) kills every pair of that buffer. In a loop over parameters (or over
param groups) each iteration touches different elements, so the loop's back edge drops the pairs
of element roles that the next iteration would read (see `_per_element`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import libcst as cst

from gsr_rewrite.analysis.cfg import Fact, FunctionFlow, Node, PointsTo, build_flow, preds_of
from gsr_rewrite.analysis.transfer import node_effects, read_parts, target_names
from gsr_rewrite.errors import AnalysisLimit
from gsr_rewrite.frontend.effects import EMPTY, Effects, Evaluator, buffers, is_role, names_in

__all__ = ["Fact", "FunctionFlow", "Node", "PointsTo", "assigned_names", "build_flow",
           "live_buffers", "must_reach", "preds_of", "read_parts", "solve_liveness",
           "solve_points_to", "target_names"]


# -- fixpoints -------------------------------------------------------------------------------
#: rounds over a function's flow before points-to gives up (timm's RMSpropTF needed more)
POINTS_TO_ROUNDS = 50


def must_reach(nodes: Sequence[Node], entry: Node, start: set[str],
               out_of: Callable[[Node, set[str]], set[str]],
               preds: dict[int, list[Node]]) -> dict[int, set[str]]:
    """Forward must-analysis: the names bound on every path from `entry` to each node, before
    it runs (`out_of(node, names_in)`: after it)."""
    everything = start | {k for n in nodes for k in n.eff.assigns}
    din: dict[int, set[str]] = {id(n): set(everything) for n in nodes}
    din[id(entry)] = set(start)
    for _ in range(POINTS_TO_ROUNDS):
        changed = False
        for n in nodes:
            if n is not entry:
                sets = [out_of(q, din[id(q)]) for q in preds[id(n)] if id(q) in din]
                new = set.intersection(*sets) if sets else set()
                if new != din[id(n)]:
                    din[id(n)], changed = new, True
        if not changed:
            return din
    # stopped early, the sets would still hold names not bound on every path: never use them
    raise AnalysisLimit(f"{entry.kind} of a run", "which names are bound on every path did not "
                        f"settle in {POINTS_TO_ROUNDS} rounds; nothing is assumed of it")


def solve_points_to(flow: FunctionFlow, entry_pt: PointsTo,
                    make_eval: Callable[[PointsTo], Evaluator]) -> None:
    preds = preds_of(flow.nodes)
    for n in flow.nodes:  # from nothing: a value left from an earlier solve, kept alive by a
        n.pt_in = {}  # loop's cycle, would never leave (the least fixpoint is the sound one)
        n.eff = Effects()
    flow.entry.pt_in = dict(entry_pt)
    # a node is evaluated once a path from the entry reaches it: evaluated before, it would see
    # names its unreached predecessors bind as unbound (a local function called as an unknown
    # one: opaque), a value that later rounds cannot take back, and which a loop's cycle may
    # then carry round forever (timm's RMSpropTF never settled)
    reached = {id(flow.entry)}
    for _ in range(POINTS_TO_ROUNDS):
        changed = False
        for n in flow.nodes:
            if n is not flow.entry:
                if not any(id(p) in reached for p in preds[id(n)]):
                    continue
                if id(n) not in reached:
                    reached.add(id(n))
                    changed = True
                merged: PointsTo = {}
                for p in preds[id(n)]:
                    for k, v in p.pt_out().items():
                        merged[k] = merged.get(k, EMPTY) | v
                if merged != n.pt_in:
                    n.pt_in, changed = merged, True
            before = n.pt_out()
            n.eff = node_effects(n, make_eval(n.pt_in))
            # a node whose effects changed (a callee now known to append to a list) must reach
            # its successors even where no pt_in did
            changed |= n.pt_out() != before
        if not changed:
            return
    # the class is refused with this reason (the others of the module go on), never a crash
    raise AnalysisLimit(f"{flow.func.name.value}()", "the points-to analysis did not settle in "
                        f"{POINTS_TO_ROUNDS} rounds; nothing is assumed of it")


def solve_liveness(flow: FunctionFlow, exit_live: frozenset[Fact]) -> None:
    for n in flow.nodes:
        if n.kind == "latch":
            n.per_element = _per_element(n)
    flow.exit.live_in = exit_live
    for _ in range(100):
        changed = False
        for n in reversed(flow.nodes):
            if n is flow.exit:
                continue
            out: set[Fact] = set()
            for m in n.succ:
                out |= m.live_in
            if n.kind == "latch" and n.per_element and n.after_loop is not None:
                out = {f for f in out if not is_role(f[1])} | set(n.after_loop.live_in)
            live_in, live_out = _live_through(n, out)
            if live_out != n.live_out or live_in != n.live_in:
                n.live_out, n.live_in, changed = live_out, live_in, True
        if not changed:
            return
    raise RuntimeError("liveness analysis did not converge")


def liveness_without(flow: FunctionFlow, pruned: frozenset[tuple[int, int]]
                     ) -> dict[int, frozenset[Fact]]:
    """live_out of each node (by id) when the edges `pruned` are never taken ((id of a test
    node, index of its successor): a branch whose condition is known), from the solved
    liveness of `flow` (its exit's facts; a least fixpoint again); nodes those paths no
    longer reach are left out."""
    index = {id(n): k for k, n in enumerate(flow.nodes)}
    live_in = [flow.exit.live_in if n is flow.exit else frozenset() for n in flow.nodes]
    live_out: list[frozenset[Fact]] = [frozenset()] * len(flow.nodes)
    succ = [[index[id(m)] for j, m in enumerate(n.succ) if (id(n), j) not in pruned]
            for n in flow.nodes]
    for _ in range(100):
        changed = False
        for k in range(len(flow.nodes) - 1, -1, -1):
            n = flow.nodes[k]
            if n is flow.exit:
                continue
            out: set[Fact] = set()
            for j in succ[k]:
                out |= live_in[j]
            if n.kind == "latch" and n.per_element and n.after_loop is not None:
                out = {f for f in out if not is_role(f[1])} | \
                    set(live_in[index[id(n.after_loop)]])
            new_in, new_out = _live_through(n, out)
            if new_out != live_out[k] or new_in != live_in[k]:
                live_out[k], live_in[k], changed = new_out, new_in, True
        if not changed:
            reached, todo = {index[id(flow.entry)]}, [index[id(flow.entry)]]
            while todo:  # the nodes left on the paths that remain
                for j in succ[todo.pop()]:
                    if j not in reached:
                        reached.add(j)
                        todo.append(j)
            return {id(n): live_out[k] for k, n in enumerate(flow.nodes) if k in reached}
    raise RuntimeError("liveness analysis did not converge")


def _live_through(n: Node, out: set[Fact]) -> tuple[frozenset[Fact], frozenset[Fact]]:
    """(live_in, live_out) of n, given the facts live at the start of its successors."""
    pt = n.pt_out()  # after n, a variable holds only what points-to says it may
    live_out = frozenset(f for f in out if f[0].startswith("@") or f[0] not in pt
                         or f[1] in buffers(pt[f[0]]))
    killed_vars = set(n.eff.assigns)
    fresh = {a.site for a in n.eff.allocs}  # allocated here: no earlier contents needed
    gone = n.eff.kills | fresh
    keep = {f for f in live_out if f[0] not in killed_vars and f[1] not in gone}
    # `g = grad.view(-1)` / `g = p.grad`: contents read later through the new name were
    # there before it was bound, so they stay live before this node
    aliased = {f for v, b in live_out if v in killed_vars and b not in gone
               for f in _alias_sources(n, b)}
    live_in = frozenset(keep | aliased | {(v, b) for v, b, _ in n.eff.reads if b not in fresh})
    return live_in, live_out


def _alias_sources(n: Node, b: str) -> list[Fact]:
    """`x = y.view(-1)` / `g = p.grad` binds a name to contents of b that will be read later: before
    n they are read through the names of n that hold b (y), or through a root (p.grad) as "@b"."""
    names = [v for v in sorted(_node_names(n)) if b in buffers(n.pt_in.get(v, EMPTY))]
    return [(v, b) for v in names] + ([("@" + b, b)] if b in n.eff.rooted or not names else [])


_NAMES: dict[int, tuple[cst.CSTNode, set[str]]] = {}  # node -> names it mentions (a cache)


def _node_names(n: Node) -> set[str]:
    s = n.node
    if s is None:
        return set()
    cached = _NAMES.get(id(s))
    if cached is not None and cached[0] is s:
        return cached[1]
    names = set().union(*(names_in(x) for x in read_parts(s)))
    if len(_NAMES) > 4096:  # bounded: it keeps nodes alive
        _NAMES.clear()
    _NAMES[id(s)] = (s, names)
    return names


def _per_element(latch: Node) -> bool:
    """True when each iteration of this for-loop touches only its own parameters' buffers.

    The loop must iterate over parameters, tensor lists (directly, zipped or enumerated), param
    groups or device groups of tensor lists (a partition of the parameters), and its body may
    reach tensor lists defined outside the loop only as `lst[i]`, with `i` the loop's index.
    """
    loop = latch.node
    if not isinstance(loop, cst.For):
        return False
    reachable = _all_reachable(latch)
    head = next(n for n in reachable if n.kind == "for" and n.node is loop)
    bound = list(head.eff.assigns.values())
    elements = [v for v in bound if v]
    if not head.eff.partition and (not elements or not all(
            v <= frozenset({"%group"}) or all(is_role(b) for b in v) for v in elements)):
        return False
    # default-deny: a body that reaches other parameters' buffers (`group["params"][i - 1]`,
    # self.param_groups, an opaque object, an unknown call, a helper that does) is not per-element
    inside = _stmts_in(loop.body)
    reach = max((n.eff.foreign for n in reachable if n is not head and id(n.node) in inside),
                default=0)
    if reach >= (1 if not elements or any(v - {"%group"} for v in elements) else 2):
        return False
    assigned = assigned_names(loop)
    outer = {k for k, v in head.pt_in.items() if buffers(v) and k not in assigned}
    # a function defined outside the loop and called in it reads the caller's variables it
    # closes over (they are passed as keywords, see Evaluator._helper_call): so does the loop
    calls = [n for n in reachable if any(kw for _, _, kw, _ in n.eff.calls)]
    if calls:
        if any(k in outer for n in calls if id(n.node) in inside
               for _, _, kw, _ in n.eff.calls for k in kw):
            return False
    return _only_indexed(loop.body, outer, _index_var(loop))


_STMTS: dict[int, tuple[cst.CSTNode, set[int]]] = {}  # loop body -> its statements (a cache)


def _stmts_in(body: cst.CSTNode) -> set[int]:
    cached = _STMTS.get(id(body))
    if cached is not None and cached[0] is body:
        return cached[1]
    found: set[int] = set()

    class _V(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            found.add(id(node))
            return not isinstance(node, cst.BaseExpression)  # statements, not their parts

    body.visit(_V())
    if len(_STMTS) > 4096:  # bounded: it keeps nodes alive
        _STMTS.clear()
    _STMTS[id(body)] = (body, found)
    return found


_ASSIGNED: dict[int, tuple[cst.For, set[str]]] = {}  # loop -> names bound in it (a cache)


def assigned_names(loop: cst.For) -> set[str]:
    cached = _ASSIGNED.get(id(loop))
    if cached is not None and cached[0] is loop:
        return cached[1]
    names: set[str] = set()

    class _V(cst.CSTVisitor):
        def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
            names.update(target_names(node.target))

        def visit_AugAssign(self, node: cst.AugAssign) -> None:
            names.update(target_names(node.target))

        def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
            names.update(target_names(node.target))

        def visit_For(self, node: cst.For) -> None:
            names.update(target_names(node.target))

        def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
            names.update(target_names(node.target))

    loop.visit(_V())
    if len(_ASSIGNED) > 4096:  # bounded: it keeps nodes alive
        _ASSIGNED.clear()
    _ASSIGNED[id(loop)] = (loop, names)
    return names


def _index_var(loop: cst.For) -> str | None:
    it = loop.iter
    if isinstance(it, cst.Call) and isinstance(it.func, cst.Name):
        if it.func.value == "enumerate" and isinstance(loop.target, cst.Tuple):
            first = loop.target.elements[0].value
            return first.value if isinstance(first, cst.Name) else None
        if it.func.value == "range" and isinstance(loop.target, cst.Name):
            return loop.target.value
    return None


def _only_indexed(body: cst.CSTNode, outer: set[str], index: str | None) -> bool:
    ok = True

    class _V(cst.CSTVisitor):
        def visit_Subscript(self, node: cst.Subscript) -> bool:
            if isinstance(node.value, cst.Name) and node.value.value in outer:
                idx = node.slice[0].slice if len(node.slice) == 1 else None
                if (index is not None and isinstance(idx, cst.Index)
                        and isinstance(idx.value, cst.Name) and idx.value.value == index):
                    return False  # lst[i]: this iteration's element
            return True

        def visit_Name(self, node: cst.Name) -> None:
            nonlocal ok
            if node.value in outer:
                ok = False

    body.visit(_V())
    return ok


def _all_reachable(start: Node) -> list[Node]:
    seen: dict[int, Node] = {}
    stack = [start]
    while stack:
        n = stack.pop()
        if id(n) not in seen:
            seen[id(n)] = n
            stack.extend(n.succ)
    return list(seen.values())


def live_buffers(facts: frozenset[Fact]) -> set[str]:
    return {b for _, b in facts}
