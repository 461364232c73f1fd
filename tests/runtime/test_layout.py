"""The layout certificate (runtime/layout.py): a lookup says yes only where the guard it replaces
says yes, sees an `out=` that resized a tensor since, follows layouts that change between steps,
and is active only while an R step of a class proved to keep layouts runs."""

from __future__ import annotations

import random

import pytest
import torch

from gsr_rewrite.optim import AdamW, AdamWR
from gsr_rewrite.runtime import guards, layout, precondition
from tests.runtime.test_guards import _tensor

Tensor = torch.Tensor


class _Holder:
    """What the precondition reads of an optimizer (weakly referable, as optimizers are)."""

    def __init__(self, params: list[torch.nn.Parameter], state: dict[Tensor, dict]) -> None:
        self.param_groups, self.state = [{"params": params}], state


def _optimizer(rng: random.Random) -> _Holder:
    """Params with grads and two state tensors each, some of them odd (another dtype or shape,
    transposed, requires_grad, empty, 0-d, integer, a view at an offset)."""
    pool: list[Tensor] = []
    params, state = [], {}
    for _ in range(rng.randrange(1, 5)):
        shape = rng.choice([(3, 4), (5,), (2, 3, 2), (4, 4)])
        p = torch.nn.Parameter(torch.randn(shape))
        try:  # p.grad takes only its param's size, dtype and device
            p.grad = _tensor(rng, shape, pool) if rng.random() < 0.5 else torch.randn(shape)
        except RuntimeError:
            p.grad = torch.randn(shape)
        state[p] = {"a": _tensor(rng, shape, pool) if rng.random() < 0.5 else torch.randn(shape),
                    "b": torch.randn(shape), "step": 3}
        pool += [p.grad, state[p]["a"]]  # later odd tensors may be views of these
        params.append(p)
    return _Holder(params, state)


@pytest.mark.parametrize("seed", range(150))
def test_a_lookup_says_yes_only_where_the_guard_does(seed: int) -> None:
    rng = random.Random(seed)
    opt = _optimizer(rng)
    holds, cert = precondition.checked(opt, certify=True)
    if not holds:  # overlapping buffers: the original step runs, with no certificate
        assert cert is None
        return
    assert cert is not None
    ids, every = cert.certificate(), cert.every
    fresh = [torch.randn(t.shape) for t in every[:2]]
    with torch.no_grad():  # as a step runs (`fits` asks no lookup where autograd would record)
        for _ in range(30):
            h = rng.choice(every)
            t = rng.choice([*every, *fresh, None])
            if layout.pair_fits(ids, h, t):
                assert guards._fits_each((h,), (t,) if t is not None else ()), (h, t)
        n = len(opt.param_groups[0]["params"])
        columns = [[rng.choice(every) for _ in range(n)] for _ in range(3)]
        for k in range(1, 3):
            if layout.lists_fit(ids, columns[:k], columns[k:]):
                assert all(guards._fits_each([c[i] for c in columns[:k]],
                                             [c[i] for c in columns[k:]]) for i in range(n))


def test_a_lookup_sees_an_out_that_resized_a_tensor() -> None:
    p = torch.nn.Parameter(torch.randn(4, 4))
    p.grad = torch.randn(4, 4)
    state = {p: {"v": torch.randn(4, 4)}}
    opt = _Holder([p], state)
    holds, cert = precondition.checked(opt, certify=True)
    assert holds and cert is not None
    ids = cert.certificate()
    assert layout.pair_fits(ids, p.grad, state[p]["v"])
    torch.sum(torch.randn(4, 4, 4), dim=0, out=state[p]["v"])  # same shape: still a yes
    assert layout.pair_fits(ids, p.grad, state[p]["v"])
    with pytest.warns(UserWarning):
        torch.sum(torch.randn(4, 4), dim=0, out=state[p]["v"])  # resized to (4,)
    assert not layout.pair_fits(ids, p.grad, state[p]["v"])
    assert not guards.fits((p.grad,), (state[p]["v"],))


def _pair(seed: int) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    gen = torch.Generator().manual_seed(seed)
    made = [torch.randn(s, generator=gen) for s in [(6, 6), (12,), (3, 4)]]
    return ([torch.nn.Parameter(t.clone()) for t in made],
            [torch.nn.Parameter(t.clone()) for t in made])


@pytest.mark.parametrize("foreach", [False, True])
def test_layouts_that_change_between_steps_are_followed(foreach: bool) -> None:
    """Between steps, state is swapped for a transposed copy and a gradient for a view of a
    wider buffer: the record is rebuilt and results stay bitwise equal to the original's."""
    ps, qs = _pair(0)
    original, reduced = AdamW(ps, foreach=foreach), AdamWR(qs, foreach=foreach)
    used = []
    real = layout.pair_fits

    def spy(ids: layout.Certificate, h: object, t: object) -> bool:
        used.append(real(ids, h, t))
        return used[-1]

    layout.pair_fits = spy  # type: ignore[assignment]
    try:
        for step in range(6):
            gen = torch.Generator().manual_seed(100 + step)
            for p, q in zip(ps, qs, strict=True):
                g = torch.randn(p.shape, generator=gen)
                p.grad = g.clone()
                if step == 3:  # a gradient that is a strided view, state transposed
                    wide = torch.zeros((2, *g.shape))
                    wide[1] = g
                    q.grad = wide[1]
                    st = reduced.state[q]
                    if g.dim() == 2 and g.shape[0] == g.shape[1]:
                        st["exp_avg_sq"] = st["exp_avg_sq"].t().contiguous().t()
                else:
                    q.grad = g.clone()
            original.step()
            reduced.step()
            for p, q in zip(ps, qs, strict=True):
                assert torch.equal(p, q), step
    finally:
        layout.pair_fits = real  # type: ignore[assignment]
    assert layout.ACTIVE.cert is None
    if not foreach:  # the for-loop path asks pairs: some by lookup
        assert any(used)


def test_the_certificate_is_active_only_inside_the_step() -> None:
    p = torch.nn.Parameter(torch.randn(3, 3))
    p.grad = torch.randn(3, 3)
    opt = AdamWR([p])
    seen = []

    def hook(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        seen.append(layout.ACTIVE.cert)

    opt.register_step_pre_hook(hook)
    opt.step()
    assert seen == [None] and layout.ACTIVE.cert is None
    opt.param_groups[0]["lr"] = "not a number"  # the step raises inside
    with pytest.raises(TypeError):
        opt.step()
    assert layout.ACTIVE.cert is None


def test_without_tensor_guards_the_guards_read_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch without Dynamo's TensorGuards (or with another signature): no certificate, the
    precondition keys on sizes and contiguity as before, and the R step stays exact."""
    monkeypatch.setattr(layout, "TensorGuards", None)
    ps, qs = _pair(1)
    original, reduced = AdamW(ps), AdamWR(qs)
    for step in range(3):
        gen = torch.Generator().manual_seed(200 + step)
        for p, q in zip(ps, qs, strict=True):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        assert precondition.checked(reduced, certify=True)[1] is None
        original.step()
        reduced.step()
        assert all(torch.equal(p, q) for p, q in zip(ps, qs, strict=True))
