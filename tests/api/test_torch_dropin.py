"""`gsr_rewrite.optim.AdamWR` is torch's AdamW, rewritten: a subclass of it, every constructor
argument, torch's state layout, torch checkpoints loading bitwise; and fast when cached."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gsr_rewrite.proof.check import compare_trajectories
from tests.common import REPO


@pytest.fixture(scope="module")
def adamw_r() -> type:
    from gsr_rewrite.optim import AdamWR

    return AdamWR


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in
            ((17, 5), (5,), (3, 4, 2))]


def _run(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], steps: int,
         seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()


def test_is_torch_adamw(adamw_r: type) -> None:
    from gsr_rewrite.optim import AdamW

    assert AdamW is torch.optim.AdamW
    assert issubclass(adamw_r, torch.optim.AdamW)
    opt = adamw_r(_params(), lr=1e-3)
    assert isinstance(opt, torch.optim.AdamW)
    assert isinstance(opt, torch.optim.Adam)


def _flipped_options() -> list[dict[str, object]]:
    """Each boolean option of torch's AdamW turned from its default (fused, capturable,
    differentiable, foreach, amsgrad, maximize in torch 2.13), and a tensor lr."""
    sig = inspect.signature(torch.optim.AdamW.__init__)
    flips: list[dict[str, object]] = [
        {name: not (p.default or False)} for name, p in sig.parameters.items()
        if isinstance(p.default, bool) or (p.default is None and name in ("foreach", "fused"))]
    return [*flips, {"lr": torch.tensor(1e-2)}]


@pytest.mark.parametrize("kwargs", _flipped_options(), ids=lambda k: ",".join(k))
def test_every_torch_argument_bitwise(adamw_r: type, kwargs: dict[str, object]) -> None:
    """Each argument torch's AdamW takes is accepted, and the step is torch's, bitwise; where
    torch's own step refuses the setup (capturable on a CPU), R refuses it with the same error."""
    runs: list[list[torch.Tensor] | str] = []
    for cls in (torch.optim.AdamW, adamw_r):
        params = [p.detach() for p in _params()]  # differentiable=True updates them under grad
        try:
            _run(cls(params, **{"lr": 1e-2, "weight_decay": 0.1, **kwargs}), params, 4, seed=1)
        except (RuntimeError, AssertionError, ValueError) as e:
            runs.append(f"{type(e).__name__}: {e}")
            continue
        runs.append([p.clone() for p in params])
    expected, got = runs
    if isinstance(expected, str):
        assert got == expected
        return
    assert not isinstance(got, str), got
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a, b)


def test_state_layout_is_torchs(adamw_r: type) -> None:
    params_t, params_r = _params(), _params()
    torch_opt, r_opt = torch.optim.AdamW(params_t), adamw_r(params_r)
    _run(torch_opt, params_t, 2, seed=2)
    _run(r_opt, params_r, 2, seed=2)
    st, sr = torch_opt.state_dict(), r_opt.state_dict()
    assert st["param_groups"] == sr["param_groups"]
    for k, v in st["state"].items():
        assert sr["state"][k].keys() == v.keys()
        for name, t in v.items():
            assert isinstance(sr["state"][k][name], torch.Tensor)  # `step` is a tensor
            assert sr["state"][k][name].dtype == t.dtype and torch.equal(sr["state"][k][name], t)


@pytest.mark.parametrize("direction", ["torch->R", "R->torch"])
def test_checkpoints_continue_bitwise(adamw_r: type, direction: str) -> None:
    """Train 3 steps with one class, load its state_dict into the other, 3 more steps: the
    params equal torch's AdamW trained 6 steps straight."""
    first, second = ((torch.optim.AdamW, adamw_r) if direction == "torch->R"
                     else (adamw_r, torch.optim.AdamW))
    straight = _params()
    opt = torch.optim.AdamW(straight, lr=1e-2, amsgrad=True)
    _run(opt, straight, 3, seed=3)
    _run(opt, straight, 3, seed=4)

    params = _params()
    a = first(params, lr=1e-2, amsgrad=True)
    _run(a, params, 3, seed=3)
    b = second(params, lr=1e-2, amsgrad=True)
    b.load_state_dict(a.state_dict())
    _run(b, params, 3, seed=4)
    for x, y in zip(straight, params, strict=True):
        assert torch.equal(x, y)


def test_stress_trajectory_bitwise(adamw_r: type) -> None:
    res = compare_trajectories(torch.optim.AdamW, adamw_r, {"foreach": True}, steps=6,
                               mode="bitwise")
    assert res.passed, res.message


def _fresh(code: str, cache: Path) -> float:
    """Seconds `code` takes in a fresh process (after `import torch`), with the cache `cache`."""
    env = {**os.environ, "GSR_REWRITE_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", "import time, torch\nt = time.perf_counter()\n"
                          f"{code}\nprint(time.perf_counter() - t)"], env=env, cwd=REPO,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


@pytest.mark.slow
def test_cached_reduce_and_import_are_fast(tmp_path: Path) -> None:
    """A rewrite and its certification are cached on disk: a fresh process gets the R class of
    torch's AdamW (a subclass whose step is inherited from Adam) in well under a second."""
    reduce_code = "import gsr_rewrite\ngsr_rewrite.reduce(torch.optim.AdamW)"
    first = _fresh(reduce_code, tmp_path)
    again = _fresh(reduce_code, tmp_path)
    shipped = _fresh("from gsr_rewrite.optim import AdamWR", tmp_path)
    plain = _fresh("import gsr_rewrite.optim", tmp_path)
    print(f"reduce(AdamW): first {first:.2f} s, cached {again:.2f} s; "
          f"from gsr_rewrite.optim import AdamWR {shipped:.2f} s; import {plain:.2f} s")
    assert again < 1.0 and shipped < 1.0 and plain < 1.0
    assert first > again  # the first one did the work


def test_cache_key_covers_torch_version(monkeypatch: pytest.MonkeyPatch) -> None:
    from gsr_rewrite.api import modules

    key = modules._cache_key("f.py", "", "source")
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert modules._cache_key("f.py", "", "source") != key


def test_pickles_across_processes(adamw_r: type, tmp_path: Path) -> None:
    """An AdamWR object pickles by reference to its `gsr_rewrite.reduced` name, so a fresh process
    (with the cache warm) loads it as that class."""
    params = _params()
    opt = adamw_r(params, lr=1e-2)
    _run(opt, params, 2, seed=5)
    torch.save({"opt": opt, "params": params}, tmp_path / "opt.pt")
    code = (f"import torch\nd = torch.load({str(tmp_path / 'opt.pt')!r}, weights_only=False)\n"
            "print(type(d['opt']).__module__, type(d['opt']).__name__, "
            "isinstance(d['opt'], torch.optim.AdamW))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["gsr_rewrite.reduced.torch.optim.adamw", "AdamWR", "True"]
