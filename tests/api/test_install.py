"""`gsr_rewrite.install(opt)`: an existing optimizer gets the R step, its type unchanged."""

from __future__ import annotations

import pickle

import pytest
import torch

from gsr_rewrite import install, uninstall
from gsr_rewrite.errors import RewriteError
from gsr_rewrite.proof.memory import measure_temporaries

SHAPES = [(64, 64)] * 8


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]


def _steps(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], n: int) -> bool:
    """n steps; whether the last one changed a gradient (an R step uses them as scratch)."""
    g = torch.Generator().manual_seed(1)
    given: list[torch.Tensor] = []
    for _ in range(n):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        given = [p.grad.clone() for p in params if p.grad is not None]
        opt.step()
    return any(not torch.equal(a, p.grad) for a, p in zip(given, params, strict=True))


@pytest.mark.parametrize("cls", [torch.optim.AdamW, torch.optim.Adam])
@pytest.mark.parametrize("foreach", [False, True])
def test_type_kept_results_bitwise_temporaries_gone(cls: type, foreach: bool) -> None:
    plain_params, params = _params(), _params()
    plain = cls(plain_params, lr=1e-2, foreach=foreach)
    opt = install(cls(params, lr=1e-2, foreach=foreach))
    assert type(opt) is cls
    assert not _steps(plain, plain_params, 5)
    assert _steps(opt, params, 5)  # the R step ran: gradients hold scratch values
    assert all(torch.equal(a, b) for a, b in zip(plain_params, params, strict=True))

    original = measure_temporaries(lambda ps: cls(ps, foreach=foreach), SHAPES)
    installed = measure_temporaries(lambda ps: install(cls(ps, foreach=foreach)), SHAPES)
    assert original.units >= 0.3  # 1 list of temporaries (foreach), 3 single tensors (loop)
    assert installed.units <= 0.05, installed


def test_hooks_still_run_and_uninstall_restores() -> None:
    params = _params()
    opt = install(torch.optim.AdamW(params))
    calls: list[str] = []
    opt.register_step_pre_hook(lambda *_: calls.append("pre"))
    opt.register_step_post_hook(lambda *_: calls.append("post"))
    _steps(opt, params, 1)
    assert calls == ["pre", "post"]
    assert "step" in vars(opt)
    uninstall(opt)
    assert "step" not in vars(opt) and type(opt) is torch.optim.AdamW
    grads = [p.grad.clone() for p in params]
    opt.step()  # torch's own step again: the gradients are left as they were
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, params, strict=True))


def test_lr_scheduler_after_install_and_pickling() -> None:
    params = _params()
    opt = install(torch.optim.AdamW(params, lr=0.1))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    _steps(opt, params, 1)
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.05
    twin = pickle.loads(pickle.dumps(opt))  # torch pickles the state only: not installed
    assert type(twin) is torch.optim.AdamW and "step" not in vars(twin)


def test_refuses_a_step_already_replaced() -> None:
    params = _params()
    opt = torch.optim.AdamW(params)
    torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    with pytest.raises(RewriteError, match="before creating them"):
        install(opt)
