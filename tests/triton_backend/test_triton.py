"""The Triton backend: traced per-element programs, kernels vs the eager originals, fall-backs.

Without a GPU the kernels run under TRITON_INTERPRET=1 (tests/conftest.py) on small chunks
(CHUNK 256, BLOCK 64), so tensors of 0, 1, 7, 33, 1000 and 261 elements cover empty tensors,
masked tails, full blocks and several chunks per tensor.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sympy
import torch

from tests.common import REPO

pytest.importorskip("triton")

from gsr_rewrite.optim import Adan, Lion, LionR  # noqa: E402
from gsr_rewrite.optim.adamw import AdamW, AdamWR  # noqa: E402
from gsr_rewrite.optim.shipped import SHIPPED_TRITON, generate  # noqa: E402
from gsr_rewrite.runtime import triton_launch  # noqa: E402
from gsr_rewrite.triton_backend.check import TOLERANCE, check_triton  # noqa: E402
from gsr_rewrite.triton_backend.trace import KernelTraceError, trace_program  # noqa: E402

# AdamW, AdamWR: the reference classes AdamWRTriton derives from (gsr_rewrite.optim.AdamW is
# torch's own)
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _triton(name: str) -> type:
    import gsr_rewrite.optim as optim

    return getattr(optim, name)  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def small_chunks() -> Iterator[None]:
    saved = triton_launch.CHUNK, triton_launch.BLOCK
    if DEV == "cpu":
        triton_launch.CHUNK, triton_launch.BLOCK = 256, 64
    yield
    triton_launch.CHUNK, triton_launch.BLOCK = saved


# -- kernels vs eager originals -------------------------------------------------------------------

MATCH = [
    (AdamW, "AdamWRTriton", {}),
    (AdamW, "AdamWRTriton", {"amsgrad": True, "foreach": True}),
    (AdamW, "AdamWRTriton", {"maximize": True}),
    (AdamW, "AdamWRTriton", {"weight_decay": 0.0}),
    (Adan, "AdanRTriton", {}),
    (Adan, "AdanRTriton", {"weight_decay": 0.05, "foreach": True}),
    (Adan, "AdanRTriton", {"no_prox": True, "weight_decay": 0.05}),
    (Lion, "LionRTriton", {}),
    (Lion, "LionRTriton", {"weight_decay": 0.1}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(("original", "name", "config"), MATCH,
                         ids=[f"{n}-{c}" for _, n, c in MATCH])
def test_kernels_match_the_eager_original(original: type, name: str, config: dict[str, Any],
                                          dtype: torch.dtype) -> None:
    """7 steps, params and every state tensor within TOLERANCE (triton_check explains it)."""
    res = check_triton(original, _triton(name), config, dtype)
    assert res.launches >= 6, "the kernel path did not run (steps 2-7 must launch)"
    assert res.passed, f"{res.worst:.3g} x the tolerance at {res.where}"


def test_bf16_params_with_fp32_states() -> None:
    """Per-role dtypes: bf16 param/grad pointers, fp32 state pointers, in one specialization.

    Eager torch cannot mix them (``lerp_`` wants one dtype), so the reference is the eager
    original in fp32 whose params are rounded to bf16 after every step, as the kernel stores them.
    """
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(n, generator=gen).bfloat16() for n in (7, 300)]
    grads = [[torch.randn(t.shape, generator=gen).bfloat16() for t in init] for _ in range(7)]
    ref = [torch.nn.Parameter(t.float().to(DEV)) for t in init]
    new = [torch.nn.Parameter(t.to(DEV)) for t in init]
    eager, fused = AdamW(ref), _triton("AdamWRTriton")(new)
    for step, g in enumerate(grads):
        for p, q, gi in zip(ref, new, g, strict=True):
            p.grad, q.grad = gi.float().to(DEV), gi.to(DEV)
        eager.step()
        fused.step()
        with torch.no_grad():
            for p in ref:
                p.copy_(p.bfloat16().float())
        if step == 0:  # fp32 moments from here on
            for st in fused.state.values():
                for k in ("exp_avg", "exp_avg_sq"):
                    st[k] = st[k].float()
    rtol, atol = TOLERANCE[torch.bfloat16]
    for p, q in zip(ref, new, strict=True):
        assert q.dtype == torch.bfloat16 and fused.state[q]["exp_avg"].dtype == torch.float32
        torch.testing.assert_close(q.float(), p.detach(), rtol=rtol, atol=atol)
        torch.testing.assert_close(fused.state[q]["exp_avg_sq"], eager.state[p]["exp_avg_sq"],
                                   rtol=1e-2, atol=1e-6)


# -- two passes: per-tensor reductions ---------------------------------------------------------


@pytest.fixture(scope="module")
def lamb(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """examples/lamb.py through the tool: LAMB's trust ratio needs ||p|| and ||update||."""
    from gsr_rewrite.pipeline import rewrite_source
    from gsr_rewrite.proof.validate import load_module
    from gsr_rewrite.triton_backend.generate import triton_classes

    result = rewrite_source((REPO / "examples/lamb.py").read_text(), "examples/lamb.py")
    assert result.code is not None
    path = tmp_path_factory.mktemp("lamb") / "lamb_r.py"
    path.write_text(result.code)
    text, (outcome,) = triton_classes(load_module(path, "gsr_lamb_eager"), [("Lamb", "LambR")])
    assert outcome.specs >= 2 and not outcome.refused  # traced ahead of time, as a check
    path.write_text(result.code + text)
    return load_module(path, "gsr_lamb_triton")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("config", [{}, {"weight_decay": 0.0}])
def test_two_pass_lamb_matches_the_eager_original(lamb: Any, config: dict[str, Any],
                                                  dtype: torch.dtype) -> None:
    spec = lamb._LAMB_KERNELS.spec_for(config)
    assert len(spec.kernels) == 2 and spec.reductions == 2
    res = check_triton(lamb.Lamb, lamb.LambRTriton, config, dtype)
    assert res.launches == 2 * 6, "pass 1 and pass 2 on steps 2-7"
    assert res.passed, f"{res.worst:.3g} x the tolerance at {res.where}"


def test_two_pass_reductions_are_deterministic(lamb: Any) -> None:
    """Per-chunk partials summed in a fixed order: two runs agree bit for bit."""
    runs = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(1000, generator=gen).to(DEV))]
        _steps(lamb.LambRTriton(params), params, 3)
        runs.append(params[0].detach().clone())
    assert torch.equal(*runs)


def test_torch_optim_adam_as_installed_gets_kernels() -> None:
    """A module we did not write: torch.optim.adam, whose step counter is a 0-d tensor that
    step() reads with .item() (the tracer keeps its tag) and the kernel path advances in place."""
    import inspect as _inspect
    import tempfile

    import torch.optim.adam as adam_module

    from gsr_rewrite.pipeline import rewrite_source
    from gsr_rewrite.proof.validate import load_module
    from gsr_rewrite.triton_backend.generate import triton_classes

    path = Path(_inspect.getfile(adam_module))
    result = rewrite_source(path.read_text(), str(path), "torch.optim")
    assert result.code is not None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "adam_r.py"
        out.write_text(result.code)
        text, (outcome,) = triton_classes(load_module(out, "gsr_adam_eager"), [("Adam", "AdamR")])
        assert outcome.specs > 0, outcome.refused
        out.write_text(result.code + text)
        module = load_module(out, "gsr_adam_triton")
        res = check_triton(torch.optim.Adam, module.AdamRTriton, {"weight_decay": 0.01})
    assert res.passed and res.launches >= 6, res


# -- fall-backs: never an error ---------------------------------------------------------------


def _steps(opt: torch.optim.Optimizer, params: list[torch.Tensor], n: int, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(p.device, p.dtype)
        opt.step()


def _counts() -> dict[str, int]:
    return dict(triton_launch.COUNTS)


def _delta(before: dict[str, int]) -> dict[str, int]:
    return {k: triton_launch.COUNTS[k] - v for k, v in before.items()}


def _pair(make: Callable[[], list[torch.Tensor]], eager: type, triton_cls: type,
          config: dict[str, Any], steps: int = 4) -> tuple[list[torch.Tensor], list[torch.Tensor],
                                                          dict[str, int]]:
    a, b = make(), make()
    _steps(eager(a, **config), a, steps)
    before = _counts()
    _steps(triton_cls(b, **config), b, steps)
    return a, b, _delta(before)


def test_non_contiguous_params_take_the_eager_r_path_bitwise() -> None:
    def make() -> list[torch.Tensor]:
        base = torch.randn(6, 10, generator=torch.Generator().manual_seed(3))
        return [torch.nn.Parameter(base.t().to(DEV))]  # not contiguous

    a, b, seen = _pair(make, AdamWR, _triton("AdamWRTriton"), {})
    assert seen["launches"] == 0 and seen["eager_groups"] == 4
    assert torch.equal(a[0], b[0])


def test_unsupported_dtypes_take_the_eager_r_path() -> None:
    def make() -> list[torch.Tensor]:
        return [torch.nn.Parameter(torch.ones(5, dtype=torch.float64, device=DEV))]

    a, b, seen = _pair(make, LionR, _triton("LionRTriton"), {})
    assert seen["launches"] == 0
    assert torch.equal(a[0], b[0])
    for bad in (torch.zeros(3, dtype=torch.complex64), torch.zeros(3).to_sparse(),
                torch.zeros(4, 2).t()):
        assert not triton_launch._qualifies(bad, bad)


def test_params_sharing_memory_take_the_eager_r_path() -> None:
    """Two params that are views of one buffer: kernel programs would race, eager is ordered."""
    def make() -> list[torch.Tensor]:
        base = torch.randn(40, generator=torch.Generator().manual_seed(0)).to(DEV)
        return [torch.nn.Parameter(base[:30]), torch.nn.Parameter(base[10:])]

    a, b, seen = _pair(make, LionR, _triton("LionRTriton"), {})
    assert seen["launches"] == 0
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_configuration_with_many_changes_gets_a_kernel() -> None:
    """Four options off their defaults at once: traced on first use like any other."""
    config = {"amsgrad": True, "maximize": True, "weight_decay": 0.0, "foreach": False}
    res = check_triton(AdamW, _triton("AdamWRTriton"), config)
    assert res.launches >= 6, "the kernel path did not run (steps 2-7 must launch)"
    assert res.passed, f"{res.worst:.3g} x the tolerance at {res.where}"


def test_groups_are_dispatched_one_by_one() -> None:
    """A group the kernel takes and a group it cannot (float64) in one optimizer."""
    gen = torch.Generator().manual_seed(0)
    fast = [torch.nn.Parameter(torch.randn(40, generator=gen).to(DEV))]
    slow = [torch.nn.Parameter(torch.randn(40, generator=gen, dtype=torch.float64).to(DEV))]
    opt = _triton("LionRTriton")([{"params": fast}, {"params": slow, "lr": 1e-3}])
    before = _counts()
    _steps(opt, fast + slow, 3)
    seen = _delta(before)
    assert seen["kernel_groups"] == 2 and seen["eager_groups"] == 4  # step 1 eager for both


def test_state_dict_round_trip_and_replaced_storage() -> None:
    """load_state_dict replaces the state tensors and `p.data = ...` moves a param: the cached
    pointer tables must notice both (a stale table would write freed memory)."""
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(n, generator=gen) for n in (33, 300)]
    ref = [torch.nn.Parameter(t.clone().to(DEV)) for t in init]
    new = [torch.nn.Parameter(t.clone().to(DEV)) for t in init]
    eager, fused = AdamW(ref), _triton("AdamWRTriton")(new)
    _steps(eager, ref, 3)
    _steps(fused, new, 3)
    again = _triton("AdamWRTriton")(new)
    again.load_state_dict(fused.state_dict())
    for p in new:
        p.data = p.data.clone()
    _steps(eager, ref, 4, seed=1)
    _steps(again, new, 4, seed=1)
    rtol, atol = TOLERANCE[torch.float32]
    for a, b in zip(ref, new, strict=True):
        torch.testing.assert_close(b, a, rtol=rtol, atol=atol)
    assert again.state[new[0]]["step"] == eager.state[ref[0]]["step"] == 7


def test_params_without_grad_are_left_alone() -> None:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(20, generator=gen).to(DEV)) for _ in range(2)]
    opt = _triton("AdamWRTriton")(params)
    _steps(opt, params, 2)
    frozen = params[1].detach().clone()
    params[1].grad = None
    params[0].grad = torch.ones_like(params[0])
    opt.step()
    assert torch.equal(params[1], frozen) and opt.state[params[1]]["step"] == 2
    assert opt.state[params[0]]["step"] == 3


# -- the tracer ---------------------------------------------------------------------------------


class _Base(torch.optim.Optimizer):
    def __init__(self, params: Any, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["buf"] = torch.zeros_like(p)
                state["step"] += 1
                self.update(p, state, group["lr"])

    def update(self, p: torch.Tensor, state: dict[str, Any], lr: float) -> None:
        raise NotImplementedError


class Momentum(_Base):
    def update(self, p: torch.Tensor, state: dict[str, Any], lr: float) -> None:
        state["buf"].mul_(0.9).add_(p.grad)
        p.add_(state["buf"], alpha=-lr / math.sqrt(state["step"]))


class MaxScaled(_Base):  # a reduction the kernels have no partial sums for
    def update(self, p: torch.Tensor, state: dict[str, Any], lr: float) -> None:
        p.add_(p.grad, alpha=-lr)
        p.mul_(p.grad.abs().max())


class NormedState(_Base):  # the state itself needs a reduction: three passes
    def update(self, p: torch.Tensor, state: dict[str, Any], lr: float) -> None:
        state["buf"].add_(p.grad / p.grad.norm())
        p.add_(state["buf"], alpha=-lr)


class Counter(_Base):  # a step counter kept on self, outside opt.state
    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        self.calls = getattr(self, "calls", 0) + 1
        super().step()

    def update(self, p: torch.Tensor, state: dict[str, Any], lr: float) -> None:
        p.add_(p.grad, alpha=-lr * self.calls)


class Swapped(_Base):  # element 0 reads element -1 and back, through views
    def update(self, p: torch.Tensor, state: dict[str, Any], lr: float) -> None:
        p[0].add_(p.grad[-1], alpha=-lr)
        p[-1].add_(p.grad[0], alpha=-lr)


class LostTag(_Base):  # a host scalar computed outside Python arithmetic on the tagged values
    def update(self, p: torch.Tensor, state: dict[str, Any], lr: float) -> None:
        p.add_(p.grad, alpha=-float(torch.tensor(lr).sqrt()))


def test_tracer_finds_the_program_and_its_host_scalars() -> None:
    prog = trace_program(Momentum, {})
    assert str(prog.outputs["buf"]) == "9*e_buf/10 + e_grad"  # literals stay exact
    assert "h_lr" in str(prog.outputs["param"]) and "st_step" in str(prog.outputs["param"])
    assert {str(k): str(v) for k, v in prog.updates.items()} == {"st_step": "st_step + 1"}


@pytest.mark.parametrize(("cls", "why"), [
    (MaxScaled, "no per-element translation"),
    (Counter, "steps 2 and 3 differ"),
    (Swapped, "not a per-element step"),
    (LostTag, "lost track"),
])
def test_tracer_refuses_what_is_not_a_per_element_program(cls: type, why: str) -> None:
    with pytest.raises(KernelTraceError, match=why):
        trace_program(cls, {})


def test_a_state_update_needing_a_reduction_is_refused_by_the_emitter() -> None:
    from gsr_rewrite.triton_backend.emit import EmitError, kernel_text

    program = trace_program(NormedState, {})
    assert program.reductions == (("norm2", sympy.Symbol("e_grad")),)
    with pytest.raises(EmitError, match="more than two passes"):
        kernel_text(program, "k")


# -- generation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("module", sorted(SHIPPED_TRITON))
def test_shipped_triton_variant_is_fresh(module: str) -> None:
    shipped = (REPO / "gsr_rewrite" / "optim" / module).read_text()
    assert generate(REPO, module) == shipped, "run `python scripts/regenerate.py`"


def test_cli_emits_and_checks_triton_classes(tmp_path: Path) -> None:
    import subprocess

    out = tmp_path / "lion_r.py"
    run = subprocess.run([sys.executable, "-m", "gsr_rewrite.cli", str(REPO / "examples/lion.py"),
                          "--backend", "triton", "--check", "-o", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "LionRTriton vs Lion (float32" in run.stderr and "passed" in run.stderr
    assert "class LionRTriton(LionR):" in out.read_text()


def test_triton_corpus_script_on_torch_sgd() -> None:
    """benchmarks/triton_corpus.py on one installed module: SGD (stateless by default)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("triton_corpus",
                                                  REPO / "benchmarks" / "triton_corpus.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    sys.modules["triton_corpus"] = script  # dataclasses look their module up there
    spec.loader.exec_module(script)
    (row,) = script.run_module("torch.optim.sgd", ["SGD"])
    assert row.status == "kernels" and row.specs > 0
    assert float(row.fp32) <= 1.0 and float(row.bf16) <= 1.0, row
