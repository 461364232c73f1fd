"""Placements that hold when an option is off: `if caution: mask = (exp_avg * grad > 0)` and
`if clipping is not None: clip_(denom, grad)` read the gradient late, so it is live where the
denominator is made, on every path; with the option off it is dead there.

An option is the test of an `if` made only of the function's own parameters that it never
binds again (`caution`, `clipping is not None`, `not maximize`, `a and b`, `a or b`): while the
function runs, the test gives the same answer wherever it is asked, so a placement made under
it at one point knows which branch the `if` takes later. A truth test is trusted only for a
value whose truth cannot change (bool, number, string, None: `runtime.truthy`/`falsy`, checked
at run time); `x is None` for any value. The placement's guard then also asks the option
(`_gsr.fits(...) and _gsr.falsy(caution)`); where it does not hold, the statement runs as the
original does.

`Options.freeing` says which branches, pruned from the flow (`dataflow.liveness_without`), leave
a buffer dead where it is wanted; the planner checks the placement with that liveness.
"""

from __future__ import annotations

from collections.abc import Callable

import libcst as cst

from gsr_rewrite.analysis.dataflow import Fact, liveness_without
from gsr_rewrite.analysis.interprocedural import FunctionAnalysis
from gsr_rewrite.frontend.scopes import bound_names, param_list
from gsr_rewrite.transform import RUNTIME

Live = dict[int, frozenset[Fact]]  # live_out of each flow node, by id


def stable_ifs(func: cst.FunctionDef) -> tuple[set[str], dict[int, cst.If]]:
    """(the parameters `func` never binds again, its `if` statements by the id of their test)."""
    params = {p.name.value for p in param_list(func)}
    rebound = set().union(*(bound_names(s) for s in func.body.body)) \
        if isinstance(func.body, cst.IndentedBlock) else set()
    ifs: dict[int, cst.If] = {}

    class _Ifs(cst.CSTVisitor):
        def visit_If(self, node: cst.If) -> None:
            ifs[id(node.test)] = node

        def visit_Nonlocal(self, node: cst.Nonlocal) -> None:  # a nested def rebinds it
            rebound.update(n.name.value for n in node.names)

    func.visit(_Ifs())
    return params - rebound, ifs


class Options:
    def __init__(self, fa: FunctionAnalysis) -> None:
        self.fa = fa
        stable, ifs = stable_ifs(fa.func)
        # (test node, code that is true when it goes to its first successor, ... its second)
        self.tests: list[tuple[int, str, str]] = []
        for n in fa.flow.nodes:
            if n.kind != "test" or len(n.succ) != 2 or not isinstance(n.node, cst.BaseExpression) \
                    or id(n.node) not in ifs:
                continue
            when = known(n.node, True, stable), known(n.node, False, stable)
            if when[0] is not None and when[1] is not None:
                self.tests.append((id(n), when[0], when[1]))
        # pruning a test's first successor (the `if` body) means it is false, the second true
        self.code = {t: (if_false, if_true) for t, if_true, if_false in self.tests}
        self._cache: dict[frozenset[tuple[int, int]], Live] = {}
        self.position = {id(n): k for k, n in enumerate(fa.flow.nodes)}

    def freeing(self, fits: Callable[[Live], bool]) -> tuple[Live, str] | None:
        """The liveness with the fewest branches pruned under which `fits` holds, and the code
        of the condition under which those branches are not taken; None when none does."""
        if not self.tests:
            return None
        tried: list[frozenset[tuple[int, int]]] = []
        for test, _, _ in self.tests:  # one option at a time, then all of them, minimised
            tried += [frozenset({(test, 0)}), frozenset({(test, 1)})]
        found = next((p for p in tried if fits(self._live(p))), None)
        if found is None:
            for first in (0, 1):  # every option off (or on), then put back what is not needed
                every = {(t, first) for t, _, _ in self.tests}
                if not fits(self._live(frozenset(every))):
                    continue
                for edge in sorted(every, key=self._order):
                    if fits(self._live(frozenset(every - {edge}))):
                        every.discard(edge)
                found = frozenset(every)
                break
        if found is None:
            return None
        parts = [self.code[t][k] for t, k in sorted(found, key=self._order)]  # source order
        return self._live(found), " and ".join(parts)

    def _order(self, edge: tuple[int, int]) -> tuple[int, int]:
        """Where an edge's test stands in the flow (ids of nodes are no order)."""
        return self.position[edge[0]], edge[1]

    def _live(self, pruned: frozenset[tuple[int, int]]) -> Live:
        if pruned not in self._cache:
            self._cache[pruned] = liveness_without(self.fa.flow, pruned)
        return self._cache[pruned]


def _runtime_truth(name: str, value: bool) -> str:
    return f"{RUNTIME}.{'truthy' if value else 'falsy'}({name})"


def plain_truth(name: str, value: bool) -> str:
    """`runtime.truthy`/`falsy` in plain Python, for source the analysis reads again."""
    test = name if value else f"not {name}"
    return f"(type({name}) in (bool, int, float, str, type(None)) and {test})"


def known(e: cst.BaseExpression, value: bool, stable: set[str],
          truth: Callable[[str, bool], str] = _runtime_truth) -> str | None:
    """Code true only when `e` (made of `stable` names) is known to be `value`; None when `e`
    is not such a test. `truth(x, v)`: the code that `x`, a value that cannot change, is v."""
    if isinstance(e, cst.Name) and e.value in stable:
        return truth(e.value, value)
    if isinstance(e, cst.UnaryOperation) and isinstance(e.operator, cst.Not):
        return known(e.expression, not value, stable, truth)
    if isinstance(e, cst.Comparison) and len(e.comparisons) == 1 and \
            isinstance(e.left, cst.Name) and e.left.value in stable and \
            isinstance(e.comparisons[0].comparator, cst.Name) and \
            e.comparisons[0].comparator.value == "None" and \
            isinstance(e.comparisons[0].operator, (cst.Is, cst.IsNot)):
        is_none = isinstance(e.comparisons[0].operator, cst.Is) == value
        return f"{e.left.value} {'is' if is_none else 'is not'} None"
    if isinstance(e, cst.BooleanOperation):
        left, right = known(e.left, value, stable, truth), known(e.right, value, stable, truth)
        if left is None or right is None:
            return None
        both = isinstance(e.operator, cst.And) == value  # `a and b` true: both; false: either
        return f"({left} {'and' if both else 'or'} {right})"
    return None
