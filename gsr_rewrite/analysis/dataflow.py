"""Control-flow graph of one function, points-to (forward) and content liveness (backward).

Liveness facts are pairs (variable, buffer): "the current contents of `buffer` may still be read
through `variable`". Rebinding a variable kills its pairs; overwriting every element of a buffer
(`copy_`, `zero_`, `out=`) kills every pair of that buffer. In a loop over parameters (or over
param groups) each iteration touches different elements, so the loop's back edge drops the pairs
of element roles that the next iteration would read (see `_per_element`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import libcst as cst

from gsr_rewrite.errors import RewriteError
from gsr_rewrite.frontend.effects import (
    EMPTY,
    Effects,
    Evaluator,
    Value,
    buffers,
    is_role,
    names_in,
    store_in_state,
)
from gsr_rewrite.frontend.values import LIST, PART, element, flat, item

Fact = tuple[str, str]  # (variable, buffer)
PointsTo = dict[str, Value]


@dataclass(eq=False)
class Node:
    kind: str  # entry | exit | stmt | test | for | with | latch | def
    node: cst.CSTNode | None = None
    line: cst.SimpleStatementLine | None = None  # the line holding a small statement
    succ: list[Node] = field(default_factory=list)
    after_loop: Node | None = None  # latch only: where the loop exits to
    per_element: bool = False  # latch only
    pt_in: PointsTo = field(default_factory=dict)
    eff: Effects = field(default_factory=Effects)
    live_in: frozenset[Fact] = frozenset()
    live_out: frozenset[Fact] = frozenset()

    def pt_out(self) -> PointsTo:
        out = dict(self.pt_in)
        for name, v in self.eff.weak.items():
            out[name] = out.get(name, EMPTY) | v
        out.update(self.eff.assigns)
        return out


@dataclass
class FunctionFlow:
    func: cst.FunctionDef
    nodes: list[Node]  # in source order (entry first, exit last)
    entry: Node
    exit: Node


class _Builder:
    def __init__(self, where: Callable[[cst.CSTNode], str]) -> None:
        self.nodes: list[Node] = []
        self.exit = Node("exit")
        self.where = where
        self.guarded: list[list[Node]] = []  # per enclosing try (or suppressing with): its nodes

    def new(self, kind: str, node: cst.CSTNode | None = None, **kw: object) -> Node:
        n = Node(kind, node, **kw)  # type: ignore[arg-type]
        self.nodes.append(n)
        if self.guarded:
            self.guarded[-1].append(n)
        return n

    def guarded_block(self, stmts: Sequence[Any], nxt: Node, loop: tuple[Node, Node] | None,
                      catchers: list[Node]) -> Node:
        """`block`, where any node may raise (default-deny: any call, any op) and the exception
        may land in any of `catchers` (handlers, a finally block, the end of a `with` whose
        context manager may suppress it)."""
        self.guarded.append([])
        head = self.block(stmts, nxt, loop)
        inside = self.guarded.pop()
        for n in inside:
            n.succ.extend(c for c in catchers if c not in n.succ)
        if self.guarded:  # what the inner handlers do not catch reaches the outer ones
            self.guarded[-1].extend(inside)
        return head

    def block(self, stmts: Sequence[Any], nxt: Node, loop: tuple[Node, Node] | None) -> Node:
        """Build `stmts` so that control falls through to `nxt`; returns the first node."""
        first = nxt
        built: list[tuple[Node, Node | _Tail]] = []  # (head, tail to link onward)
        for stmt in stmts:
            built.append(self.statement(stmt, loop))
        # link: each statement's tail continues into the next statement's head
        for i in range(len(built) - 1, -1, -1):
            head, tail = built[i]
            target = built[i + 1][0] if i + 1 < len(built) else nxt
            for t in _open_tails(tail):
                t.succ.append(target)
            first = head
        return first if built else nxt

    def statement(self, stmt: cst.BaseStatement, loop: tuple[Node, Node] | None
                  ) -> tuple[Node, Node | _Tail]:
        """Returns (head, tail); the tail's successors are filled in by `block`."""
        if isinstance(stmt, (cst.SimpleStatementLine, cst.SimpleStatementSuite)):
            # a suite (`if p.grad is None: continue`) has no line of its own: nothing in it is
            # rewritten (placement wants a statement on its own line), but its flow counts
            line = stmt if isinstance(stmt, cst.SimpleStatementLine) else None
            nodes = [self.new("stmt", s, line=line) for s in stmt.body
                     if not isinstance(s, cst.Pass)]
            if not nodes:
                n = self.new("stmt", None)
                return n, n
            for a, b in zip(nodes, nodes[1:], strict=False):
                a.succ.append(b)
            for n in nodes:
                if isinstance(n.node, cst.Return):
                    n.succ = [self.exit]
                    n.kind = "return"
                elif isinstance(n.node, cst.Raise):
                    # a caller may catch it and go on: what outlives the function (params,
                    # state: the exit's live facts) must be intact here
                    n.succ = [self.exit]
                    n.kind = "raise"
                elif isinstance(n.node, (cst.Continue, cst.Break)):
                    if loop is None:
                        raise RewriteError(self.where(n.node), "break/continue outside a loop")
                    n.succ = [loop[0] if isinstance(n.node, cst.Continue) else loop[1]]
                    n.kind = "jump"
            return nodes[0], _Tail(nodes[-1])
        if isinstance(stmt, cst.If):
            test = self.new("test", stmt.test)
            join = self.new("join")
            body = self.block(_statements(stmt.body), join, loop)
            other: Node
            if stmt.orelse is None:
                other = join
            elif isinstance(stmt.orelse, cst.If):
                h, t = self.statement(stmt.orelse, loop)
                for x in _open_tails(t):
                    x.succ.append(join)
                other = h
            else:
                other = self.block(_statements(stmt.orelse.body), join, loop)
            test.succ = [body, other]
            return test, _Tail(join)
        if isinstance(stmt, (cst.For, cst.While)):
            head = self.new("for" if isinstance(stmt, cst.For) else "test",
                            stmt if isinstance(stmt, cst.For) else stmt.test)
            after = self.new("join")
            latch = self.new("latch", stmt, after_loop=after)
            latch.succ = [head]
            body = self.block(_statements(stmt.body), latch, (latch, after))
            exit_to = after if stmt.orelse is None else \
                self.block(_statements(stmt.orelse.body), after, loop)
            head.succ = [body, exit_to]
            return head, _Tail(after)
        if isinstance(stmt, cst.With):
            head = self.new("with", stmt)
            join = self.new("join")
            if all(_mode_manager(item.item) for item in stmt.items):
                head.succ = [self.block(_statements(stmt.body), join, loop)]
            else:  # `contextlib.suppress(...)` or any manager we do not know: may swallow
                head.succ = [self.guarded_block(_statements(stmt.body), join, loop, [join])]
            return head, _Tail(join)
        if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
            n = self.new("def", stmt)
            return n, _Tail(n)
        if isinstance(stmt, cst.Try):
            # Handlers are entered from the start and the end of the body (an approximation that
            # keeps everything read in a handler live across the whole body).
            join = self.new("join")
            fin = self.block(_statements(stmt.finalbody.body), join, loop) \
                if stmt.finalbody else join
            body_end = self.new("join")
            handlers = [self.block(_statements(h.body), fin, loop) for h in stmt.handlers]
            orelse = self.block(_statements(stmt.orelse.body), fin, loop) if stmt.orelse else fin
            body_end.succ = [orelse, *handlers]
            start = self.new("join")
            body = self.guarded_block(_statements(stmt.body), body_end, loop, handlers or [fin])
            start.succ = [body, *handlers]
            return start, _Tail(join)
        raise RewriteError(self.where(stmt), f"unsupported statement `{type(stmt).__name__}` in "
                           "an optimizer step; rewrite it with if/for/while")


def _statements(body: cst.BaseSuite) -> Sequence[Any]:
    """The statements of a compound statement's body; a one-line suite (`if c: continue`) is
    one statement."""
    return body.body if isinstance(body, cst.IndentedBlock) else [body]


def _mode_manager(e: cst.BaseExpression) -> bool:
    """`torch.no_grad()`, `torch.enable_grad()`, `torch.autograd.profiler.record_function(...)`:
    context managers of torch that never swallow an exception."""
    from gsr_rewrite.frontend.effects import dotted

    name = dotted(e.func) if isinstance(e, cst.Call) else None
    return name is not None and name.startswith("torch.")


@dataclass
class _Tail:
    node: Node


def _open_tails(t: Node | _Tail) -> list[Node]:
    if isinstance(t, _Tail):
        n = t.node
        return [] if n.kind in ("return", "raise", "jump") else [n]
    return [t]


def build_flow(func: cst.FunctionDef, where: Callable[[cst.CSTNode], str]) -> FunctionFlow:
    b = _Builder(where)
    entry = b.new("entry", func)
    body = func.body.body if isinstance(func.body, cst.IndentedBlock) else []
    entry.succ = [b.block(body, b.exit, None)]
    b.nodes.append(b.exit)
    return FunctionFlow(func, b.nodes, entry, b.exit)


# -- evaluation of one node ----------------------------------------------------------------------
def node_effects(n: Node, ev: Evaluator) -> Effects:
    s = n.node
    if n.kind in ("stmt", "return", "raise") and s is not None:
        _small_statement(s, ev)
    elif n.kind == "test" and isinstance(s, cst.BaseExpression):
        ev.value(s)
    elif n.kind == "for" and isinstance(s, cst.For):
        _bind_for(s, ev)
    elif n.kind == "with" and isinstance(s, cst.With):
        for item in s.items:
            v = ev.value(item.item)
            if item.asname is not None:
                _assign(item.asname.name, v, ev)
    elif n.kind == "def" and isinstance(s, (cst.FunctionDef, cst.ClassDef)):
        ev.define(s)
    return ev.eff


def _small_statement(s: cst.CSTNode, ev: Evaluator) -> None:
    if isinstance(s, cst.Assign):
        v = ev.value(s.value)
        for t in s.targets:
            _assign(t.target, v, ev, s.value)
    elif isinstance(s, cst.AnnAssign) and s.value is not None:
        _assign(s.target, ev.value(s.value), ev, s.value)
    elif isinstance(s, cst.AugAssign):
        rhs = ev.read(s.value)
        target = ev.read(s.target)
        name = s.target.value if isinstance(s.target, cst.Name) else "@expr"
        for b in ev.touched(target):
            ev.eff.writes.append((name, b))
        if not buffers(target) and isinstance(s.target, cst.Name) and buffers(rhs):
            ev.eff.assigns[s.target.value] = rhs
    elif isinstance(s, cst.Expr):
        ev.value(s.value)
    elif isinstance(s, cst.Return) and s.value is not None:
        for b in buffers(ev.read(s.value)):
            ev.eff.escapes.append((b, "returned from the function", s))
    elif isinstance(s, cst.Del):
        for gone in _targets(s.target):
            if isinstance(gone, cst.Name):
                ev.eff.assigns[gone.value] = EMPTY
    else:
        for child in s.children:
            if isinstance(child, cst.BaseExpression):
                ev.value(child)


def _targets(t: cst.BaseExpression) -> list[cst.BaseExpression]:
    if isinstance(t, (cst.Tuple, cst.List)):
        return [x for el in t.elements for x in _targets(el.value)]
    if isinstance(t, cst.StarredElement):
        return _targets(t.value)
    return [t]


def _assign(target: cst.BaseExpression, v: Value, ev: Evaluator,
            value: cst.BaseExpression | None = None) -> None:
    if isinstance(target, cst.Name) and target.value in ev.unknowns.outer_names:
        for b in buffers(v):  # `global HISTORY; HISTORY = grad`
            ev.eff.escapes.append((b, f"stored in `{target.value}`, declared global or "
                                   "nonlocal", target))
    elif isinstance(target, cst.Name):
        ev.eff.assigns[target.value] = v
    elif isinstance(target, (cst.Tuple, cst.List)):
        for el, sub in zip(target.elements, _unpack(target, value, v, ev), strict=True):
            _assign(el.value, sub, ev)
    elif isinstance(target, cst.Subscript):
        for index in target.slice:  # `t[t.gt(0)] = c` reads t to build its mask
            if isinstance(index.slice, cst.Index):
                ev.read(index.slice.value)
        base = ev.peek(target.value)
        if "%pstate" in base:  # state["k"] = v: v becomes persistent optimizer state
            store_in_state(ev, v, target)
        elif "%list" in base and isinstance(target.value, cst.Name):
            # `lst[i] = view_as_real(lst[i])`: the list now holds v (a tensor would copy it)
            lst = target.value.value
            ev.eff.weak[lst] = ev.eff.weak.get(lst, EMPTY) | flat(v) | LIST
            ev.eff.writes.extend(("@expr", b) for b in ev.touched(base))
            ev.eff.reads.extend(("@expr", b, target) for b in buffers(v))
        else:
            for b in ev.touched(base):
                ev.eff.writes.append(("@expr", b))
            for b in buffers(v):
                ev.eff.escapes.append((b, "stored into a container or tensor", target))
    elif isinstance(target, cst.Attribute):
        for b in buffers(v):
            ev.eff.escapes.append((b, f"stored on attribute `.{target.attr.value}`", target))
        # `p.grad = state["m"]`, `g.data = x`: the object's buffers change identity
        for b in buffers(ev.peek(target.value)) | ({"grad"} if target.attr.value == "grad"
                                                    else set()):
            ev.eff.escapes.append((b, f"its `.{target.attr.value}` is reassigned", target))


def _unpack(target: cst.Tuple | cst.List, value: cst.BaseExpression | None, v: Value,
            ev: Evaluator) -> list[Value]:
    """What each element of `a, b, c = x, *ys, z` receives: pairs from both ends; elements that
    meet a starred value get the union of everything starred; `a, b = t` takes t's positions
    when t is structured (see values.py), and anything unknown gets all of v."""
    n = len(target.elements)
    if any(isinstance(el, cst.StarredElement) for el in target.elements):
        return [flat(v)] * n
    if not isinstance(value, (cst.Tuple, cst.List)):
        return [item(v, k) for k in range(n)]
    vals = value.elements
    star = next((k for k, el in enumerate(vals) if isinstance(el, cst.StarredElement)), None)
    if star is None:
        return [ev.value(el.value) for el in vals] if len(vals) == n else [flat(v)] * n
    head = [ev.value(el.value) for el in vals[:star]]
    tail = [ev.value(el.value) for el in vals[star + 1:]]
    middle = n - len(head) - len(tail)
    if middle < 0:
        return [flat(v)] * n
    starred = EMPTY
    for el in vals[star:len(vals) - len(tail)]:
        starred |= ev.value(el.value)
    return [*head, *[starred] * middle, *tail]


def _bind_for(s: cst.For, ev: Evaluator) -> None:
    it = s.iter
    if isinstance(it, cst.Call) and isinstance(it.func, cst.Name) and \
            it.func.value in ("zip", "enumerate") and isinstance(s.target, cst.Tuple):
        vals = [ev.value(a.value) for a in it.args if a.keyword is None]
        if it.func.value == "enumerate":
            vals = [EMPTY, *vals[:1]]
        vals = [element(v) for v in vals]
        for el, v in zip(s.target.elements, vals, strict=False):
            _assign(el.value, v, ev)
        return
    v = ev.value(it)
    ev.eff.partition = PART in v
    _assign(s.target, element(v), ev)


# -- fixpoints -------------------------------------------------------------------------------
def preds_of(nodes: Sequence[Node]) -> dict[int, list[Node]]:
    preds: dict[int, list[Node]] = {id(n): [] for n in nodes}
    for n in nodes:
        for m in n.succ:
            preds[id(m)].append(n)
    return preds


def must_reach(nodes: Sequence[Node], entry: Node, start: set[str],
               out_of: Callable[[Node, set[str]], set[str]],
               preds: dict[int, list[Node]]) -> dict[int, set[str]]:
    """Forward must-analysis: the names bound on every path from `entry` to each node, before
    it runs (`out_of(node, names_in)`: after it)."""
    everything = start | {k for n in nodes for k in n.eff.assigns}
    din: dict[int, set[str]] = {id(n): set(everything) for n in nodes}
    din[id(entry)] = set(start)
    for _ in range(50):
        changed = False
        for n in nodes:
            if n is not entry:
                sets = [out_of(q, din[id(q)]) for q in preds[id(n)] if id(q) in din]
                new = set.intersection(*sets) if sets else set()
                if new != din[id(n)]:
                    din[id(n)], changed = new, True
        if not changed:
            break
    return din


def solve_points_to(flow: FunctionFlow, entry_pt: PointsTo,
                    make_eval: Callable[[PointsTo], Evaluator]) -> None:
    preds = preds_of(flow.nodes)
    for n in flow.nodes:  # from nothing: a value left from an earlier solve, kept alive by a
        n.pt_in = {}  # loop's cycle, would never leave (the least fixpoint is the sound one)
        n.eff = Effects()
    flow.entry.pt_in = dict(entry_pt)
    for _ in range(50):
        changed = False
        for n in flow.nodes:
            if n is not flow.entry:
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
    raise RuntimeError("points-to analysis did not converge")


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
            live_in = frozenset(keep | aliased |
                                {(v, b) for v, b, _ in n.eff.reads if b not in fresh})
            if live_out != n.live_out or live_in != n.live_in:
                n.live_out, n.live_in, changed = live_out, live_in, True
        if not changed:
            return
    raise RuntimeError("liveness analysis did not converge")


def _alias_sources(n: Node, b: str) -> list[Fact]:
    """`x = y.view(-1)` / `g = p.grad` binds a name to contents of b that will be read later: before
    n they are read through the names of n that hold b (y), or through a root (p.grad) as "@b"."""
    names = [v for v in sorted(_node_names(n)) if b in buffers(n.pt_in.get(v, EMPTY))]
    return [(v, b) for v in names] + ([("@" + b, b)] if b in n.eff.rooted or not names else [])


_NAMES: dict[int, tuple[cst.CSTNode, set[str]]] = {}  # node -> names it mentions (a cache)


def read_parts(s: cst.CSTNode, unpack: bool = False) -> list[cst.CSTNode]:
    """The parts of a flow node's statement that it reads: a loop's header reads its iterable,
    `x = y` reads y (a name that is only assigned to held nothing read here); with `unpack`,
    `a, b = ...` reads neither a nor b either."""
    if isinstance(s, cst.For):
        return [s.iter]
    if isinstance(s, cst.With):
        return [item.item for item in s.items]
    if isinstance(s, (cst.Assign, cst.AnnAssign)) and s.value is not None:
        targets: list[cst.BaseExpression] = [t.target for t in s.targets] \
            if isinstance(s, cst.Assign) else [s.target]
        if unpack:
            targets = [x for t in targets for x in _targets(t)]
        return [s.value, *[t for t in targets if not isinstance(t, cst.Name)]]
    return [s]


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


def target_names(t: cst.BaseExpression) -> list[str]:
    return [x.value for x in _targets(t) if isinstance(x, cst.Name)]


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
