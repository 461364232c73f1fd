"""The control-flow graph of one function: a node per small statement, test, loop header and latch,
`with`, nested `def`; edges for branches, loops, break/continue/return/raise and exceptions.

Each node also carries what the analyses (dataflow.py) compute for it: its points-to map on
entry, its effects, and the liveness facts before and after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import libcst as cst

from gsr_rewrite.errors import AnalysisLimit, RewriteError
from gsr_rewrite.frontend.effects import EMPTY, Effects, Value, dotted

Fact = tuple[str, str]  # (variable, buffer)
PointsTo = dict[str, Value]


@dataclass(eq=False)
class Node:
    kind: str  # entry | exit | stmt | test | for | with | latch | def
    node: cst.CSTNode | None = None
    line: cst.SimpleStatementLine | None = None  # the line holding a small statement
    succ: list[Node] = field(default_factory=list, repr=False)  # cycles: no repr
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
        if isinstance(stmt, cst.Match):
            return self.match(stmt, loop)
        # this class is refused; the module's other classes go on
        raise AnalysisLimit(self.where(stmt), f"unsupported statement `{type(stmt).__name__}` "
                            "in an optimizer step; rewrite it with if/for/while")

    def match(self, stmt: cst.Match, loop: tuple[Node, Node] | None) -> tuple[Node, Node | _Tail]:
        """`match` over patterns that bind no name (literals, dotted constants, None/True/False,
        `_`, and `|` of those), with guards: an if/elif chain. Each case's test reads the
        subject again (a value pattern compares it with `==`), so the subject must be free of
        calls: evaluating it once per case then does what evaluating it once does."""
        values: list[cst.BaseExpression] = []
        calls = _calls(stmt.subject)
        for case in stmt.cases:
            found = _pattern_values(case.pattern)
            if found is None:
                raise AnalysisLimit(self.where(case.pattern), "a `match` pattern that binds "
                                    "names or takes the subject apart is not supported; write "
                                    "it with if/elif")
            calls |= any(map(_calls, found))
            guard = [case.guard] if case.guard is not None else []
            values.append(cst.Tuple([cst.Element(v) for v in [stmt.subject, *found, *guard]]))
        if calls:
            raise AnalysisLimit(self.where(stmt.subject), "a `match` whose subject or patterns "
                                "call something is not supported; bind the subject to a name "
                                "first")
        join = self.new("join")
        tests = [self.new("test", v) for v in values]
        for i, (case, test) in enumerate(zip(stmt.cases, tests, strict=True)):
            body = self.block(_statements(case.body), join, loop)
            test.succ = [body, tests[i + 1] if i + 1 < len(tests) else join]
        return tests[0], _Tail(join)


def _pattern_values(p: cst.MatchPattern) -> list[cst.BaseExpression] | None:
    """The expressions a pattern compares the subject with; None where it binds a name or
    takes the subject apart (sequence, mapping, class, capture patterns)."""
    if isinstance(p, (cst.MatchValue, cst.MatchSingleton)):
        return [p.value]
    if isinstance(p, cst.MatchAs) and p.pattern is None and p.name is None:  # `case _:`
        return []
    if isinstance(p, cst.MatchOr):
        parts = [_pattern_values(el.pattern) for el in p.patterns]
        return None if any(x is None for x in parts) else [v for x in parts for v in x or []]
    return None


def _calls(e: cst.CSTNode) -> bool:
    found = False

    class _Calls(cst.CSTVisitor):
        def visit_Call(self, node: cst.Call) -> None:
            nonlocal found
            found = True

        def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
            nonlocal found
            found = True

    e.visit(_Calls())
    return found


def _statements(body: cst.BaseSuite) -> Sequence[Any]:
    """The statements of a compound statement's body; a one-line suite (`if c: continue`) is
    one statement."""
    return body.body if isinstance(body, cst.IndentedBlock) else [body]


def _mode_manager(e: cst.BaseExpression) -> bool:
    """`torch.no_grad()`, `torch.enable_grad()`, `torch.autograd.profiler.record_function(...)`:
    context managers of torch that never swallow an exception."""
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


def preds_of(nodes: Sequence[Node]) -> dict[int, list[Node]]:
    preds: dict[int, list[Node]] = {id(n): [] for n in nodes}
    for n in nodes:
        for m in n.succ:
            preds[id(m)].append(n)
    return preds
