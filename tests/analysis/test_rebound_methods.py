"""A method some other method may rebind on the instance (pytorch_optimizer's
`_compile_foreach`: `self._step_foreach = compile_foreach_step(self._step_foreach)`, called by the
user's code before training) is followed as the class's method when nothing the step can run
binds it: the R step checks at its start that the instance does not shadow it, and runs the
original step when it does (`runtime.r_step(..., followed=...)`). Must-not-fire: the binder is
`__init__`, or the step (or anything else in the class) names the binder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gsr_rewrite.pipeline import rewrite_source
from tests.common import certified_pair

SOURCE = '''
import torch
from torch.optim import Optimizer


def keep_grads(fn, sink):
    def wrapped(group, grads, ms, vs):
        fn(group, grads, ms, vs)
        sink.extend(grads)  # the gradients after the update: scratch, were they reused
    return wrapped


class Rebound(Optimizer):
    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        self.kept = []
        {init}

    def wrap_update(self):
        self._update = keep_grads(self._update, self.kept)

    def _update(self, group, grads, ms, vs):
        beta1, beta2 = group["betas"]
        params = [p for p in group["params"] if p.grad is not None]
        torch._foreach_lerp_(ms, grads, 1 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
        denoms = torch._foreach_sqrt(vs)
        torch._foreach_add_(denoms, group["eps"])
        torch._foreach_addcdiv_(params, ms, denoms, value=-group["lr"])

    @torch.no_grad()
    def step(self, closure=None):
        {head}
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            for p in ps:
                if len(self.state[p]) == 0:
                    self.state[p]["m"] = torch.zeros_like(p)
                    self.state[p]["v"] = torch.zeros_like(p)
            self._update(group, [p.grad for p in ps], [self.state[p]["m"] for p in ps],
                         [self.state[p]["v"] for p in ps])
'''


def _source(init: str = "pass", head: str = "pass") -> str:
    return SOURCE.format(init=init, head=head)


def _denoms(source: str) -> tuple[str, list[bool]]:
    (cls,) = rewrite_source(source, "rebound.py").classes
    found = [t for t in cls.temporaries if "_foreach_sqrt" in t.code]
    return " ".join([cls.status, cls.reason, *(t.how for t in found)]), [t.placed for t in found]


def _steps(cls: type, wrap: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(16, 8)) for _ in range(3)]
    opt = cls(ps)
    if wrap:
        opt.wrap_update()
    for _ in range(3):
        for p in ps:
            p.grad = torch.randn_like(p)
        opt.step()
    return [p.detach().clone() for p in ps], [g.clone() for g in opt.kept]


def test_followed_where_only_code_outside_the_step_rebinds_it(tmp_path: Path) -> None:
    why, placed = _denoms(_source())
    assert placed == [True], why
    original, reduced = certified_pair(_source(), tmp_path, "Rebound")
    for wrap in (False, True):  # wrapped: the instance shadows `_update`, the original runs
        params_o, kept_o = _steps(original, wrap)
        params_r, kept_r = _steps(reduced, wrap)
        assert all(torch.equal(a, b) for a, b in zip(params_o, params_r, strict=True))
        assert len(kept_o) == len(kept_r) == (9 if wrap else 0)
        assert all(torch.equal(a, b) for a, b in zip(kept_o, kept_r, strict=True))


@pytest.mark.parametrize(("init", "head"), [
    ("self.wrap_update()", "pass"),                 # every instance has it rebound
    ("pass", "self.wrap_update()"),                 # the step rebinds it itself
    ("pass", "getattr(self, 'wrap_update')"),       # the step names the binder
])
def test_not_followed_where_the_step_may_run_the_binder(init: str, head: str) -> None:
    why, placed = _denoms(_source(init, head))
    assert placed != [True], why



def test_a_subclass_that_overrides_a_followed_method_runs_the_original_step(
        tmp_path: Path) -> None:
    """The analysis followed `self.init_group` (not rewritten: the R class inherits it) as the
    class's method; a user's subclass of the R class that overrides it (keeping the gradients
    the step then reuses, here) gets the original step."""
    from tests.analysis.test_star_params import _source as starry

    original, reduced = certified_pair(starry(), tmp_path, "Starry")

    def keeping(base: type) -> type:
        class KeepsGrads(base):  # type: ignore[misc, valid-type]
            def init_group(self, group, *args, **kwargs):  # type: ignore[no-untyped-def]
                super().init_group(group)
                self.kept = [p.grad for p in group["params"] if p.grad is not None]

        return KeepsGrads

    kept = []
    for cls in (keeping(original), keeping(reduced)):
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(8, 8)) for _ in range(2)]
        opt = cls(ps)
        for _ in range(2):
            for p in ps:
                p.grad = torch.randn_like(p)
            opt.step()
        kept.append([g.clone() for g in opt.kept])
    assert all(torch.equal(a, b) for a, b in zip(*kept, strict=True))


UNBOUND = ("self._update = keep_grads(self._update, self.kept)", "pass")  # no method binds it


def test_a_method_bound_on_the_object_by_user_code_runs_the_original_step(
        tmp_path: Path) -> None:
    """`opt._update = wrapper` from outside (nothing in the class binds it): the R step sees
    the object's own binding and runs the original step."""
    original, reduced = certified_pair(_source().replace(*UNBOUND), tmp_path, "Rebound")
    kept = []
    for cls in (original, reduced):
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(16, 8)) for _ in range(3)]
        opt = cls(ps)
        inner = opt._update

        def wrapped(group, grads, ms, vs, inner=inner, opt=opt):  # type: ignore[no-untyped-def]
            inner(group, grads, ms, vs)
            opt.kept.extend(grads)

        opt._update = wrapped
        for _ in range(2):
            for p in ps:
                p.grad = torch.randn_like(p)
            opt.step()
        kept.append([g.clone() for g in opt.kept])
    assert len(kept[0]) == 6
    assert all(torch.equal(a, b) for a, b in zip(*kept, strict=True))


def test_a_step_that_hands_the_optimizer_away_is_refused() -> None:
    """`rebind(self)` in the step: the code it runs may bind `self._update` before the step
    calls it, after the R step's check; such a class is not rewritten."""
    source = _source(head="rebind(self)").replace(
        "\n\nclass Rebound", "\n\ndef rebind(opt):\n    opt._update = keep_grads(opt._update, "
        "opt.kept)\n\n\nclass Rebound").replace(*UNBOUND)
    (cls,) = rewrite_source(source, "rebound.py").classes
    assert cls.status == "refused", cls.reason
    assert "bind its methods" in cls.reason


def test_a_binding_in_an_overridden_base_method_counts(tmp_path: Path) -> None:
    """The base binds `self._update` in `wrap_update`; the class overrides `wrap_update` and
    calls super(): the binding is the base's, seen all the same. `_update` is followed (nothing
    the step runs binds it), and an object the binding ran on gets the original step."""
    source = _source().replace("class Rebound(Optimizer):", "class Base:").replace(
        "\n    @torch.no_grad()\n    def step(", "\n\nclass Rebound(Base, Optimizer):\n"
        "    def __init__(self, params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8):\n"
        "        Optimizer.__init__(self, params, dict(lr=lr, betas=betas, eps=eps))\n"
        "        self.kept = []\n\n"
        "    def wrap_update(self):\n        super().wrap_update()\n\n"
        "    @torch.no_grad()\n    def step(")
    why, placed = _denoms(source)
    assert placed == [True], why
    original, reduced = certified_pair(source, tmp_path, "Rebound")
    for wrap in (False, True):
        params_o, kept_o = _steps(original, wrap)
        params_r, kept_r = _steps(reduced, wrap)
        assert all(torch.equal(a, b) for a, b in zip(params_o, params_r, strict=True))
        assert len(kept_o) == len(kept_r) == (9 if wrap else 0)
        assert all(torch.equal(a, b) for a, b in zip(kept_o, kept_r, strict=True))
