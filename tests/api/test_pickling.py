"""Objects of `reduce()` classes pickle and deepcopy, and load in a fresh process."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
from pathlib import Path

import torch

from gsr_rewrite import reduce
from tests.common import REPO


def _trained(cls: type) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(7, 3, generator=g)) for _ in range(2)]
    opt = cls(params, lr=0.01)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return opt, params


def _one_more_step(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    params = [p for group in opt.param_groups for p in group["params"]]
    for k, p in enumerate(params):
        p.grad = torch.full_like(p, 0.5 + k)
    opt.step()
    return [p.detach().clone() for p in params]


def test_same_class_every_time() -> None:
    assert reduce(torch.optim.Adam) is reduce(torch.optim.Adam)
    assert reduce(torch.optim.AdamW) is reduce(torch.optim.AdamW)


def test_pickle_and_deepcopy_in_process() -> None:
    for cls in (torch.optim.Adam, torch.optim.AdamW):
        opt, _ = _trained(reduce(cls))
        for twin in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
            assert type(twin) is type(opt)
            expected = _one_more_step(copy.deepcopy(opt))
            assert all(torch.equal(a, b) for a, b in
                       zip(expected, _one_more_step(twin), strict=True))


def test_loads_in_a_fresh_process(tmp_path: Path) -> None:
    """torch.save of a reduce(Adam) object; a new interpreter loads it (the class comes back
    through `gsr_rewrite.reduced`) and takes the same next step."""
    opt, _ = _trained(reduce(torch.optim.Adam))
    torch.save(opt, tmp_path / "opt.pt")
    expected = _one_more_step(copy.deepcopy(opt))
    code = f"""
import sys, torch
sys.path.insert(0, {str(REPO)!r})
from tests.api.test_pickling import _one_more_step
opt = torch.load({str(tmp_path / 'opt.pt')!r}, weights_only=False)
print(type(opt).__module__, type(opt).__name__)
torch.save(_one_more_step(opt), {str(tmp_path / 'next.pt')!r})
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["gsr_rewrite.reduced.torch.optim.adam", "AdamR"]
    got = torch.load(tmp_path / "next.pt")
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_every_shipped_class_pickles() -> None:
    import gsr_rewrite.optim as shipped

    for name in ("AdamWR", "AdanR", "LionR"):
        opt, _ = _trained(getattr(shipped, name))
        for twin in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
            assert type(twin) is type(opt)
            expected = _one_more_step(copy.deepcopy(opt))
            assert all(torch.equal(a, b) for a, b in
                       zip(expected, _one_more_step(twin), strict=True))
