"""Python as people write it: one-line compound statements are analysed, not refused."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gsr_rewrite.api import rewrite_text

HEAD = '''
import torch
from torch.optim import Optimizer


class Mine(Optimizer):
    def __init__(self, params, lr=1e-3, beta=0.9, eps=1e-8):
        super().__init__(params, dict(lr=lr, beta=beta, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
'''
TAIL = '''
        return None
'''


def _rewrite(body: str) -> tuple[str, dict[str, str]]:
    """(status of Mine, where each temporary lives) for a step whose loop body is `body`."""
    indented = "".join(f"                {line}\n" for line in body.strip().splitlines())
    result = rewrite_text(HEAD + indented + TAIL, "mine.py")
    (mine,) = result.classes
    return mine.status, {t.code: t.lives_in if t.placed else "stays" for t in mine.temporaries}


def test_one_line_continue_is_analysed() -> None:
    status, temps = _rewrite('''
if p.grad is None: continue
grad = p.grad
state = self.state[p]
if len(state) == 0: state["v"] = torch.zeros_like(p)
v = state["v"]
v.mul_(group["beta"]).addcmul_(grad, grad, value=1 - group["beta"])
denom = v.sqrt()
p.addcdiv_(v, denom.add_(group["eps"]), value=-group["lr"])
''')
    assert status == "rewritten"
    assert "gradient" in temps["v.sqrt()"]


def test_a_one_line_read_keeps_the_gradient_alive() -> None:
    """`if ...: total += grad.sum()` after the temporary reads the gradient: the temporary
    must not live in it (before, such code was refused; now its reads count)."""
    status, temps = _rewrite('''
if p.grad is None: continue
grad = p.grad
state = self.state[p]
if len(state) == 0: state["v"] = torch.zeros_like(p)
v = state["v"]
v.mul_(group["beta"]).addcmul_(grad, grad, value=1 - group["beta"])
denom = v.sqrt().add_(group["eps"])
p.addcdiv_(v, denom, value=-group["lr"])
if group["lr"] > 0: p.add_(grad, alpha=-group["lr"])
''')
    assert status in ("rewritten", "unchanged")
    assert "gradient" not in temps.get("v.sqrt()", "stays")


BASE = '''
if p.grad is None: continue
grad = p.grad
state = self.state[p]
if len(state) == 0: state["v"] = torch.zeros_like(p)
v = state["v"]
v.mul_(group["beta"]).addcmul_(grad, grad, value=1 - group["beta"])
denom = v.sqrt().add_(group["eps"])
p.addcdiv_(v, denom, value=-group["lr"])
'''


def test_a_one_line_store_makes_the_gradient_escape() -> None:
    """`if ...: state["g"] = grad` keeps the gradient past the step: never scratch."""
    assert _rewrite(BASE) == ("rewritten", {"v.sqrt()": "gradient"})  # without it: placed
    assert _rewrite(BASE + 'if group["lr"] > 0: state["g"] = grad\n') == \
        ("rewritten", {"v.sqrt()": "stays"})


def test_a_one_line_read_of_another_params_gradient_blocks_reuse() -> None:
    """A one-line suite that reads the previous parameter's gradient after its step: that
    gradient must not hold this step's scratch."""
    status, temps = _rewrite(BASE + 'if len(group["params"]) > 1: '
                             'p.add_(group["params"][0].grad, alpha=0.0)\n')
    assert status == "rewritten" and temps["v.sqrt()"] == "stays"



LOOP_HEAD = HEAD.rsplit("            for p in", 1)[0]
LOOP_BODY = '''grad = p.grad
state = self.state[p]
if len(state) == 0:
    state["v"] = torch.zeros_like(p)
v = state["v"]
v.mul_(group["beta"]).addcmul_(grad, grad, value=1 - group["beta"])
denom = v.sqrt()
p.addcdiv_(v, denom.add_(group["eps"]), value=-group["lr"])
'''


def _indent(text: str, n: int) -> str:
    return "".join(" " * n + line + "\n" for line in text.strip().splitlines())


def _loop_class(loop: str, name: str = "Mine") -> str:
    """The class Mine (or `name`) whose step loops over the group's params as `loop` (then
    LOOP_BODY)."""
    body = loop + "\n" + _indent(LOOP_BODY, 4)
    return (LOOP_HEAD + _indent(body, 12) + TAIL).replace("class Mine(", f"class {name}(")


def _loop(loop: str) -> tuple[str, dict[str, str]]:
    """Like `_rewrite`, for a loop over the group's params written as `loop` (then LOOP_BODY)."""
    result = rewrite_text(_loop_class(loop), "mine.py")
    (mine,) = result.classes
    return mine.status, {t.code: t.lives_in if t.placed else "stays" for t in mine.temporaries}


def test_enumerate_and_walrus_loops_are_per_parameter() -> None:
    for loop in ('for i, p in enumerate(group["params"]):\n    if p.grad is None:\n'
                 '        continue',
                 'for p in group["params"]:\n    if (g := p.grad) is None:\n        continue'):
        status, temps = _loop(loop)
        assert status == "rewritten" and temps["v.sqrt()"] == "gradient", (loop, temps)


def test_an_index_while_loop_is_analysed_but_not_taken_per_parameter() -> None:
    """`while i < len(params)`: not (yet) known to visit each parameter once, so the gradient
    of one iteration may be another's: nothing moves into it (no crash, no wrong rewrite); the
    temporary is strip-mined instead, which needs no such knowledge."""
    status, temps = _loop('params = group["params"]\ni = 0\nwhile i < len(params):\n'
                          '    p = params[i]\n    i += 1\n    if p.grad is None:\n'
                          '        continue')
    assert status == "rewritten" and temps["v.sqrt()"] == "stays", temps
    assert "gradient" not in temps.values()


def test_match_refuses_its_class_with_its_position_and_the_module_goes_on() -> None:
    """A pattern that binds names (`case [g, *rest]`) is not supported: that class is refused
    where the pattern is, the module's others go on."""
    matching = _loop_class('for p in group["params"]:\n    match p.grad:\n'
                           '        case [g, *rest]:\n            continue\n'
                           '        case _:\n            pass')
    plain = _loop_class('for p in group["params"]:\n    if p.grad is None:\n        continue',
                        "Other")
    result = rewrite_text(matching + "\n\n" + plain.split("\n\n\n", 1)[1], "mine.py")
    by_name = {c.name: c for c in result.classes}
    assert by_name["Mine"].status == "refused"
    assert "mine.py:" in by_name["Mine"].reason
    assert "a `match` pattern that binds names" in by_name["Mine"].reason
    assert by_name["Other"].status == "rewritten", by_name["Other"].reason


def test_match_on_constants_is_an_if_chain() -> None:
    """`match p.grad: case None: continue` is `if p.grad is None: continue`: the loop is per
    parameter and the temporary goes in the gradient."""
    status, temps = _loop('for p in group["params"]:\n    match p.grad:\n        case None:\n'
                          '            continue\n        case _:\n            pass')
    assert status == "rewritten" and temps["v.sqrt()"] == "gradient", temps
    result = rewrite_text(_loop_class('for p in group["params"]:\n    match len(group):\n'
                                      '        case 0:\n            continue'), "mine.py")
    assert "subject or patterns call something" in result.classes[0].reason


MODED = '''
import torch
from torch.optim import Optimizer


class Moded(Optimizer):
    def __init__(self, params, lr=1e-3, beta=0.9, eps=1e-8, mode="rms"):
        super().__init__(params, dict(lr=lr, beta=beta, eps=eps, mode=mode))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["v"] = torch.zeros_like(p)
                v = state["v"]
                match group["mode"]:
                    case "rms" | "rmsprop":
                        v.mul_(group["beta"]).addcmul_(grad, grad, value=1 - group["beta"])
                        denom = v.sqrt().add_(group["eps"])
                        p.addcdiv_(grad, denom, value=-group["lr"])
                    case "sign" if group["lr"] > 0:
                        update = grad.sign()
                        p.add_(update, alpha=-group["lr"])
                    case _:
                        raise ValueError(f"unknown mode {group['mode']}")
'''


@pytest.mark.parametrize("matching", [
    'match group["lr"]:\n    case 0.0:\n        pass\n'
    '    case _:\n        p.add_(grad, alpha=0.0)\n',
    'match group["lr"]:\n    case 0.0 if bool(grad.isnan().any()):\n        pass\n',
])
def test_must_not_fire_match_cases_that_read_the_gradient(matching: str) -> None:
    """After BASE the square root goes in the gradient (test_a_one_line_store...); a case body,
    or a guard tried before any body runs, that reads the gradient keeps it out."""
    assert _rewrite(BASE + matching) == ("rewritten", {"v.sqrt()": "stays"})


def test_must_not_fire_a_helper_that_reads_every_gradient_after_the_loop() -> None:
    """A same-module helper given the params reads each one's `.grad` after the loop (a norm
    for logging): its call reads the gradients, so no iteration may leave scratch in one. The
    helper's reads through roots reach its callers (interprocedural `_rooted_reads`); before,
    only what the call was passed counted, and `v.sqrt()` went in the gradient."""
    helper = ("def total_norm(params):\n"
              "    return sum(float(q.grad.norm()) for q in params if q.grad is not None)\n")
    after = '            self.norm = total_norm(group["params"])\n'
    indented = "".join(f"                {line}\n" for line in BASE.strip().splitlines())
    source = HEAD.replace("\n\nclass Mine(", "\n\n" + helper + "\n\nclass Mine(", 1) + \
        indented + after + TAIL
    (mine,) = rewrite_text(source, "mine.py").classes
    assert mine.analysis is not None and "total_norm" in mine.analysis.functions
    lives = {t.code: t.lives_in if t.placed else "stays" for t in mine.temporaries}
    assert lives == {"v.sqrt()": "stays"}, lives


def test_match_cases_are_rewritten_and_equal_in_every_mode(tmp_path: Path) -> None:
    from gsr_rewrite.pipeline import compile_source
    from gsr_rewrite.proof.check import compare_trajectories
    from gsr_rewrite.proof.validate import load_module

    source = tmp_path / "moded.py"
    source.write_text(MODED)
    result = compile_source(MODED, str(source))
    (moded,) = result.classes
    assert moded.status == "rewritten", moded.reason
    lives = {t.code: t.lives_in if t.placed else t.strips for t in moded.temporaries}
    assert lives["grad.sign()"] == "gradient" and lives["v.sqrt()"] == 64, lives
    assert result.code is not None
    (tmp_path / "moded_r.py").write_text(result.code)
    module = load_module(tmp_path / "moded_r.py", f"moded_r_{abs(hash(result.code))}")
    for mode in ("rms", "rmsprop", "sign"):
        res = compare_trajectories(module.Moded, module.ModedR, {"mode": mode, "lr": 0.01},
                                   steps=5, mode="bitwise")
        assert res.passed, (mode, res.message)


def test_points_to_that_does_not_settle_refuses_the_class_not_the_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """timm's RMSpropTF once crashed the command line here: now the class is refused with the
    reason and the others of the module go on."""
    from gsr_rewrite.analysis import dataflow
    from gsr_rewrite.pipeline import rewrite_source

    source = textwrap.dedent('''
        import torch
        from torch.optim import Optimizer


        class Loopy(Optimizer):
            def __init__(self, params, lr=0.1):
                super().__init__(params, dict(lr=lr))

            @torch.no_grad()
            def step(self, closure=None):
                for group in self.param_groups:
                    for p in group["params"]:
                        d = p.grad.sqrt()
                        p.add_(d, alpha=-group["lr"])
        ''')
    monkeypatch.setattr(dataflow, "POINTS_TO_ROUNDS", 1)
    (c,) = rewrite_source(source, "loopy.py").classes
    assert c.status == "refused" and "did not settle in 1 rounds" in c.reason


def test_a_must_analysis_that_does_not_settle_raises_instead_of_answering(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`must_reach` starts from every name and removes; stopped early it would still claim names
    bound on paths that do not bind them. Past its rounds it raises (the class is refused)."""
    import libcst as cst

    from gsr_rewrite.analysis import dataflow
    from gsr_rewrite.analysis.cfg import build_flow
    from gsr_rewrite.errors import AnalysisLimit

    func = cst.parse_module(textwrap.dedent('''
        def f(xs):
            for x in xs:
                if x:
                    a = 1
                else:
                    b = 2
            return 0
        ''')).body[0]
    assert isinstance(func, cst.FunctionDef)
    flow = build_flow(func, lambda node: "f.py:1:1")
    for n in flow.nodes:  # the bindings the effects analysis would find
        if isinstance(n.node, cst.Assign):
            target = n.node.targets[0].target
            assert isinstance(target, cst.Name)
            n.eff.assigns[target.value] = frozenset()
    preds = dataflow.preds_of(flow.nodes)

    def bind(n: dataflow.Node, names: set[str]) -> set[str]:
        return names | set(n.eff.assigns)

    settled = dataflow.must_reach(flow.nodes, flow.entry, set(), bind, preds)
    assert all("a" not in names for names in settled.values())  # a is not bound on every path
    monkeypatch.setattr(dataflow, "POINTS_TO_ROUNDS", 1)
    with pytest.raises(AnalysisLimit, match="did not settle in 1 rounds"):
        dataflow.must_reach(flow.nodes, flow.entry, set(), bind, preds)
