"""Strip-mined runs over chunks of whole tensors (`strips(..., chunks=True)`, `part`): which runs
the rewriter lets take them, and that they compute exactly what the original computes.

The torch classes run bitwise against torch under three strip floors: one that puts every
position in its own chunk and cuts the large ones, one that groups small positions, and one that
takes the lists whole. A spy on the position ranges shows the chunks really happened. Small
optimizers of our own show what must not be chunked (a run that pairs its lists with a host
list by index, or reads a length) and that a host list paired position by position is cut along
with the chunk."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from gsr_rewrite.api import reduce
from gsr_rewrite.pipeline import rewrite_source
from gsr_rewrite.runtime import strip_runs
from gsr_rewrite.runtime.strip_runs import strip_floor

SHAPES = [(3,), (5, 7), (2, 3, 4), (17,), (64, 64), (300,), (1000,), (40, 40)]
TINY, SMALL, LARGE = 64, 4096, 1 << 20  # strip floors, bytes


@pytest.fixture
def ranges(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[tuple[int, int]]]]:
    seen: list[list[tuple[int, int]]] = []
    real = strip_runs._position_ranges

    def spy(count: int, values: Any, n: int) -> list[tuple[int, int]]:
        out = real(count, values, n)
        seen.append(out)
        return out

    monkeypatch.setattr(strip_runs, "_position_ranges", spy)
    yield seen


def _lockstep(cls: type, r_cls: type, kwargs: dict[str, Any], floor: int, steps: int = 4
              ) -> bool:
    torch.manual_seed(0)
    ps = [torch.randn(s) for s in SHAPES]
    qa = [p.clone().requires_grad_() for p in ps]
    qb = [p.clone().requires_grad_() for p in ps]
    a, b = cls(qa, **kwargs), r_cls(qb, **kwargs)
    with strip_floor(floor):
        for _ in range(steps):
            for x, y in zip(qa, qb, strict=True):
                g = torch.randn(x.shape)
                x.grad, y.grad = g.clone(), g.clone()
            a.step()
            b.step()
    return all(torch.equal(x, y) for x, y in zip(qa, qb, strict=True)) and \
        str(a.state_dict()) == str(b.state_dict())


TORCH_CASES = [
    ("RMSprop", {"momentum": 0.9, "centered": True}),
    ("RMSprop", {}),
    ("NAdam", {"weight_decay": 0.1}),
    ("Adagrad", {"weight_decay": 0.1}),
    ("Adadelta", {"weight_decay": 0.1}),
    ("Rprop", {"maximize": True}),
    ("Adam", {"weight_decay": 0.1}),  # L2 decay: the run's temporaries are allocated
]


@pytest.mark.parametrize("name, kwargs", TORCH_CASES)
def test_torch_classes_run_in_chunks_bitwise(name: str, kwargs: dict[str, Any],
                                             ranges: list[list[tuple[int, int]]]) -> None:
    cls = getattr(torch.optim, name)
    r_cls = reduce(cls)
    for floor in (TINY, SMALL, LARGE):
        ranges.clear()
        assert _lockstep(cls, r_cls, {**kwargs, "foreach": True}, floor), (name, floor)
        assert ranges, "the foreach run did not take chunks"
        if floor == TINY:
            assert all(stop - start == 1 for r in ranges for start, stop in r)
        if floor == SMALL:  # small params grouped, the large ones alone
            assert any(stop - start > 1 for r in ranges for start, stop in r)
        if floor == LARGE:
            assert all(r == [(0, len(SHAPES))] for r in ranges)


def test_emitted_foreach_runs_take_chunks_and_cut_host_lists() -> None:
    import torch.optim.nadam as nadam

    code = rewrite_source(Path(nadam.__file__).read_text(), nadam.__file__, "torch.optim",
                          "torch.optim.nadam").code
    assert code is not None
    multi = code[code.index("def _multi_tensor_nadam_gsr"):]
    single = code[code.index("def _single_tensor_nadam_gsr"):code.index("def _multi_tensor")]
    assert "chunks=True" in multi and "chunks=True" not in single
    # NAdam's step sizes are host lists made in the run, one item per position
    assert "_gsr.part(bias_correction_sqrt, strip_piece)" in multi
    assert "_gsr.part(step_size_grads, strip_piece)" in multi


_OWN = '''
import torch
from torch.optim import Optimizer


class {name}(Optimizer):
    def __init__(self, params, lr=0.1):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            avgs = []
            for p in params:
                state = self.state[p]
                if not state:
                    state["avg"] = torch.zeros_like(p)
                avgs.append(state["avg"])
            lrs = [group["lr"] * (1 + k % 3) for k in range(len(params))]
            torch._foreach_mul_(avgs, 0.9)
            torch._foreach_addcmul_(avgs, grads, grads, value=0.1)
{run}
'''

_RUNS = {
    # the host list `lrs` goes with the run's lists position by position: cut with each chunk
    "PairedR": """
            denom = torch._foreach_sqrt(avgs)
            torch._foreach_add_(denom, 1e-8)
            torch._foreach_div_(denom, lrs)
            torch._foreach_addcdiv_(params, grads, denom, value=-1.0)
""",
    # indexes the host list with a position of the run's lists: strips only
    "IndexedR": """
            denom = torch._foreach_sqrt(avgs)
            for i in range(len(denom)):
                denom[i].add_(1e-8).div_(lrs[i])
            torch._foreach_addcdiv_(params, grads, denom, value=-1.0)
""",
    # reads a length of a list of the run: strips only
    "LengthR": """
            denom = torch._foreach_sqrt(avgs)
            torch._foreach_add_(denom, 1e-8 * len(denom))
            torch._foreach_addcdiv_(params, grads, denom, value=-1.0)
""",
}


def _own_class(name: str, tmp_path: Path) -> tuple[type, type, str]:
    source = textwrap.dedent(_OWN.format(name=name[:-1], run=_RUNS[name]))
    result = rewrite_source(source, f"{name}.py")
    assert result.code is not None, [c.reason for c in result.classes]
    path = tmp_path / f"chunk_{name.lower()}.py"
    path.write_text(result.code)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return getattr(module, name[:-1]), getattr(module, name), result.code


@pytest.mark.parametrize("name, chunked", [("PairedR", True), ("IndexedR", False),
                                           ("LengthR", False)])
def test_own_runs_chunk_only_when_position_by_position(
        name: str, chunked: bool, tmp_path: Path, ranges: list[list[tuple[int, int]]]) -> None:
    cls, r_cls, code = _own_class(name, tmp_path)
    assert "_gsr.strips(" in code, "the run was not strip-mined"
    assert ("chunks=True" in code) == chunked
    if chunked:
        assert "_gsr.part(lrs, strip_piece)" in code
    for floor in (TINY, SMALL, LARGE):
        ranges.clear()
        assert _lockstep(cls, r_cls, {}, floor), floor
        assert bool(ranges) == chunked


def test_part_cuts_lists_of_the_run_length_and_passes_anything_else() -> None:
    assert strip_runs.part([1, 2, 3, 4], (1, 3, 4)) == [2, 3]
    assert strip_runs.part((1, 2, 3, 4), (1, 3, 4)) == (2, 3)
    xs = [1, 2]
    assert strip_runs.part(xs, (0, 2, 2)) is xs  # the whole list: no copy
    assert strip_runs.part(0.5, (1, 3, 4)) == 0.5
    t = torch.ones(3)
    assert strip_runs.part(t, (1, 3, 4)) is t
    assert strip_runs.part([1, 2, 3], None) == [1, 2, 3]  # strips, not chunks
    with pytest.raises(RuntimeError, match="3 items"):
        strip_runs.part([1, 2, 3], (0, 2, 4))
