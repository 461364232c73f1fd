"""A strip region, a run of statements of one block, and where things lie in the CST: the
block chain of a flow node's statement, a temporary's live range as a run, the flow nodes a
region covers. `_Refuse` carries the reason a run cannot be strip-mined."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import libcst as cst

from gsr_rewrite.analysis.dataflow import Node, preds_of
from gsr_rewrite.transform.plan import FunctionPlan, Placement


@dataclass
class StripRegion:
    """Statements block.body[start:end] run once per strip of the tensors named in `sliced`."""

    function: str
    block: cst.IndentedBlock
    start: int
    end: int
    sliced: list[str]  # names sliced whole, then `xs` of each `xs[i]` in items
    strips: int
    temporaries: list[Placement] = field(default_factory=list)
    lines: tuple[int, int] = (0, 0)
    items: list[tuple[str, str]] = field(default_factory=list)  # (xs, i): the run reads xs[i]
    once: set[int] = field(default_factory=set)  # ids of lines that run in the first strip only
    after: set[int] = field(default_factory=set)  # ids of top-level `del` lines moved after it
    chunks: bool = False  # may go over chunks of whole tensors (chunks.chunk_blocker)
    strip_values: frozenset[str] = frozenset()  # the names that hold strip lists in the run
    #: host names the run reads before it assigns them: saved before the loop, and bound to
    #: that value again at the start of every strip (each strip sees what the original sees)
    restored: set[str] = field(default_factory=set)
    #: sliced names a nested function called in the run reads: the name itself is bound to the
    #: strip in each strip, and to the whole tensor again after the run
    rebound: set[str] = field(default_factory=set)
    chunk_calls: frozenset[str] = frozenset()  # helpers called like foreach calls (chunks.py)


class _Refuse(Exception):
    def __init__(self, why: str, read_at: Node | None = None) -> None:
        super().__init__(why)
        self.read_at = read_at  # a later statement that reads what the run binds


# -- the live range as a run of statements ---------------------------------------------------
def _parents(func: cst.FunctionDef) -> dict[int, cst.CSTNode]:
    parents: dict[int, cst.CSTNode] = {}

    class _V(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            for child in node.children:
                parents[id(child)] = node
            return True

    func.visit(_V())
    return parents


def _anchor(n: Node) -> cst.CSTNode | None:
    """The CST statement a flow node belongs to (an If's test belongs to the If)."""
    if n.kind in ("entry", "exit", "join"):
        return None
    if n.line is not None:
        return n.line
    return n.node


def _chain(node: cst.CSTNode, parents: dict[int, cst.CSTNode]) -> list[tuple[cst.CSTNode, int]]:
    """(block, index of the statement holding node) from the function body down to node."""
    out: list[tuple[cst.CSTNode, int]] = []
    child = node
    while id(child) in parents:
        parent = parents[id(child)]
        if isinstance(parent, cst.IndentedBlock):
            out.append((parent, next(i for i, s in enumerate(parent.body) if s is child)))
        if isinstance(parent, cst.FunctionDef):
            break
        child = parent
    return out[::-1]


def _anchored(nodes: Iterable[Node], parents: dict[int, cst.CSTNode]
              ) -> list[tuple[Node, list[tuple[cst.CSTNode, int]]]]:
    """Each node that belongs to a statement, with that statement's block chain."""
    out = []
    for n in nodes:
        a = _anchor(n)
        if a is not None:
            out.append((n, _chain(a, parents)))
    return out


def _live_range(p: Placement, sites: set[str], nodes: Sequence[Node],
                parents: dict[int, cst.CSTNode]) -> tuple[cst.IndentedBlock, int, int]:
    # through variables only: "@expr" facts (reads inside one expression) never die
    live = [n for n in nodes if n is p.node or any(b in sites and not v.startswith("@")
                                                   for v, b in n.live_in | n.live_out)]
    chains = [c for _, c in _anchored(live, parents)]
    if any(not c for c in chains):
        raise _Refuse("its live range is not inside a block of statements")
    if not chains:
        raise _Refuse("no statement holds it")
    depth = 0
    while all(len(c) > depth for c in chains) and \
            all(c[depth][0] is chains[0][depth][0] for c in chains):
        depth += 1
    if depth == 0:
        raise _Refuse("its live range spans more than one block")
    level = depth - 1
    block = chains[0][level][0]
    assert isinstance(block, cst.IndentedBlock)
    idx = [c[level][1] for c in chains]
    return block, min(idx), max(idx) + 1


def run_of(p: Placement, fp: FunctionPlan, parents: dict[int, cst.CSTNode]
           ) -> tuple[cst.IndentedBlock, int, int]:
    """p's live range as a run of statements; the temporaries placed in its buffer (in-place
    chains on it) extend it."""
    sites = {p.alloc.site} | {q.alloc.site for q in fp.placements if q.storage == p.alloc.site}
    return _live_range(p, sites, fp.analysis.flow.nodes, parents)


def _contains(root: cst.CSTNode, node: cst.CSTNode) -> bool:
    found = False

    class _V(cst.CSTVisitor):
        def on_visit(self, x: cst.CSTNode) -> bool:
            nonlocal found
            found = found or x is node
            return not found

    root.visit(_V())
    return found


def _region_nodes(r: StripRegion, nodes: Sequence[Node], parents: dict[int, cst.CSTNode]
                  ) -> list[Node]:
    stmts = {id(s) for s in r.block.body[r.start:r.end]}
    out = [n for n, c in _anchored(nodes, parents)
           if any(b is r.block and id(b.body[i]) in stmts for b, i in c)]
    ids = {id(n) for n in out}
    preds = preds_of(nodes)
    grew = True
    while grew:  # the joins after the run's ifs: every way into them is from the run
        grew = False
        for n in nodes:
            if n.kind == "join" and id(n) not in ids and preds[id(n)] and \
                    all(id(q) in ids for q in preds[id(n)]):
                out.append(n)
                ids.add(id(n))
                grew = True
    return out
