"""Guards inside conditional expressions (transform/emit.py): a statement whose rewritten ops all
sit in one branch of `a if c else b` is guarded in that branch, so the guard runs only when the
branch does (`grad = grad if not maximize else -grad`, once per param, asks nothing when
`maximize` is off)."""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path
from typing import Any

import libcst as cst
import pytest
import torch

from gsr_rewrite import runtime
from gsr_rewrite.pipeline import compile_source
from gsr_rewrite.proof.validate import load_module
from gsr_rewrite.transform.emit import _branch_holding


def _nodes(stmt: cst.CSTNode, codes: list[str]) -> set[int]:
    """ids of the nodes of `stmt` whose code is one of `codes` (each expected once)."""
    found: dict[str, int] = {}
    module = cst.Module([])

    class _V(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            if isinstance(node, cst.BaseExpression) and module.code_for_node(node) in codes:
                found.setdefault(module.code_for_node(node), id(node))
            return True

    stmt.visit(_V())
    assert sorted(found) == sorted(codes)
    return set(found.values())


def _branch(code: str, targets: list[str]) -> str | None:
    stmt = cst.parse_statement(code).body[0]  # type: ignore[attr-defined]
    ifexps: dict[int, cst.IfExp] = {}

    class _V(cst.CSTVisitor):
        def visit_IfExp(self, node: cst.IfExp) -> None:
            ifexps[id(node)] = node

    stmt.visit(_V())
    got = _branch_holding(stmt, _nodes(stmt, targets))
    if got is None:
        return None
    return f"{cst.Module([]).code_for_node(ifexps[got[0]].test)}:{got[1]}"


@pytest.mark.parametrize(("code", "targets", "expected"), [
    ("g = x if not m else -x", ["-x"], "not m:orelse"),
    ("g = -x if m else x", ["-x"], "m:body"),
    ("g = x if not m else (-x if a else x * 2)", ["x * 2"], "a:orelse"),  # the innermost
    ("g = x if not m else (-x if a else x * 2)", ["-x", "x * 2"], "not m:orelse"),
    ("g = -x if m else x * 2", ["-x", "x * 2"], None),  # in both branches: the statement
    ("g = (x if m else -x) * 2", ["-x", "(x if m else -x) * 2"], None),  # one outside
    ("g = -x", ["-x"], None),
    ("g = [(-y if m else y) for y in xs]", ["-y"], None),  # a comprehension: once per element
    ("f = lambda y: -y if m else y", ["-y"], None),
    ("g = (h := -x) if m else x", ["-x"], None),  # binds a name
])
def test_the_branch_that_holds_every_rewritten_op(code: str, targets: list[str],
                                                   expected: str | None) -> None:
    assert _branch(code, targets) == expected


SOURCE = textwrap.dedent('''
    import torch
    from torch.optim import Optimizer


    class Signed(Optimizer):
        def __init__(self, params, lr=0.01, maximize=False):
            super().__init__(params, dict(lr=lr, maximize=maximize))

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = p.grad if not group["maximize"] else -p.grad
                    p.add_(grad.sign(), alpha=-group["lr"])
''')


def _step_guards(rcls: type, maximize: bool) -> tuple[list[torch.Tensor], int]:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3, generator=gen)) for _ in range(4)]
    for p in params:
        p.grad = torch.randn(5, 3, generator=gen)
    calls = [0]
    real = runtime.fits

    def counting(*args: Any, **kwargs: Any) -> bool:
        calls[0] += 1
        return real(*args, **kwargs)

    runtime.fits = counting  # type: ignore[assignment]
    try:
        rcls(params, maximize=maximize).step()
    finally:
        runtime.fits = real  # type: ignore[assignment]
    return [p.detach().clone() for p in params], calls[0]


def test_guard_runs_only_in_its_branch_and_results_match() -> None:
    result = compile_source(SOURCE, "signed.py")
    assert result.code is not None
    assert 'else (p.grad.neg_() if _gsr.fits((p.grad,), ()) else -p.grad)' in result.code
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "signed_r.py"
        path.write_text(result.code)
        module = load_module(path, "signed_r")
        for maximize in (False, True):
            got, calls = _step_guards(module.SignedR, maximize)
            want, _ = _step_guards(module.Signed, maximize)
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
            # the sign's guard runs once per param; the negation's only when maximizing
            assert calls == (8 if maximize else 4)
