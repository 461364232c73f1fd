"""Equivalence checks of an original optimizer against its R-variant (DESIGN.md sections 3 and 5).

The original is ground truth. Both run in lockstep on identical problems with identical grads,
each on its OWN grad clones (an R-variant may leave scratch in ``p.grad``) and from the same global
RNG state; after every step every param, every state value, every param-group option and every
other attribute the optimizer keeps on ``self`` is compared.

`stress_matrix` is the gate an R-variant passes before it is emitted: every configuration of
`stress_configs` on both foreach paths, each in eight scenarios (`_STRESS_CASES`: two param groups
on odd and on dense shapes, a duplicated param, overlapping grads, bucket-view grads, autograd
accumulation, a tensor lr, bf16), plus one checkpoint swap per path.
"""

from __future__ import annotations

import collections
import copy
import functools
import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

import torch
from torch.nn import Parameter
from torch.optim import Optimizer

from gsr_rewrite.proof.memory import StepMemory, measure_temporaries

__all__ = [
    "CheckResult",
    "check_state_dict_swap",
    "compare_trajectories",
    "foreach_paths",
    "make_problem",
    "measure_pair",
    "run_checks",
    "stress_configs",
    "stress_matrix",
]

Mode = Literal["bitwise", "tolerance"]
OptimizerClass = Callable[..., Optimizer]

# Tolerance table (mode="tolerance" only; bitwise mode ignores it):
#   float32: rtol 1.3e-6, atol 1e-5 -- torch.testing.assert_close defaults for float32, i.e.
#   about 11 ulp relative; enough for a reassociated per-element formula over 7 steps, far below
#   the 1e-3 relative change a wrong rewrite produces. Callers may pass other bounds; results
#   record the bounds used.
DEFAULT_RTOL = 1.3e-6
DEFAULT_ATOL = 1e-5
#   bfloat16 (the stress matrix's bf16 case): rtol 1.6e-2 (2 bf16 ulp, 2 * 2**-7), atol 1e-5 --
#   torch.testing.assert_close defaults for bfloat16. The float32 cases keep the bounds above.
BF16_RTOL = 1.6e-2
BF16_ATOL = 1e-5

# Equal-size shapes for measure_pair: 8 x 64x64 fp32 = 128 KiB, so 1 unit = one copy of all params.
MEASURE_SHAPES: tuple[tuple[int, ...], ...] = ((64, 64),) * 8


@dataclass(frozen=True)
class _Criteria:
    mode: Mode
    rtol: float
    atol: float
    bits: bool = False  # bitwise mode compares bit patterns: -0.0 != 0.0 (any NaN == any NaN)


@dataclass
class CheckResult:
    name: str
    config: dict[str, Any]
    device: str
    steps: int
    mode: Mode
    max_abs_diff: float
    passed: bool
    message: str = ""
    rtol: float | None = None  # tolerance mode only
    atol: float | None = None
    case: str = ""  # stress_matrix: the scenario (`_STRESS_CASES` name, or "state_dict swap")
    not_applicable: bool = False  # passed only because the original raises here (and R alike)

    @property
    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        # the name says the case, configuration, path and (off the CPU) device
        text = f"{verdict} {self.name}: {self.steps} steps, {self.mode}, " \
            f"max|diff|={self.max_abs_diff:.3g}"
        return f"{text}: {self.message}" if self.message else text


def make_problem(seed: int, device: str, dtype: torch.dtype = torch.float32,
                 dense: bool = False) -> list[Parameter]:
    """Six params with odd shapes; the last one is the one frozen mid-run by the checks.

    dense=True makes every param contiguous: an R-variant's foreach guards check whole lists, so
    one non-contiguous param sends a foreach statement to its original fallback, and only a
    dense problem exercises the rewritten foreach path.
    """
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=dtype)

    tensors = [
        randn(0, 3),  # 0-size
        randn(1),  # 1 element
        randn(5, 7) if dense else randn(7, 5).t(),  # non-contiguous: (5, 7), strides (1, 5)
        randn(3000),  # a few thousand elements, > 2048 (a common chunk/block size)
        randn(4, 6),
        randn(8, 3),
    ]
    return [Parameter(t.to(device)) for t in tensors]


def _clone_params(params: Sequence[torch.Tensor]) -> list[Parameter]:
    # clone() keeps strides (preserve_format), so the non-contiguous param stays non-contiguous.
    return [Parameter(p.detach().clone(), requires_grad=p.requires_grad) for p in params]


class _GradSchedule:
    """Seeded grads per step, same strides as the param; ``None`` on some steps for odd params
    and for the last param from the middle of the run on (a parameter frozen mid-run)."""

    def __init__(self, template: Sequence[torch.Tensor], seed: int, total_steps: int) -> None:
        self._template = list(template)
        self._gen = torch.Generator().manual_seed(seed + 1_000_003)  # independent of param init
        self._total_steps = total_steps

    def grads(self, step: int) -> list[torch.Tensor | None]:
        out: list[torch.Tensor | None] = []
        count = len(self._template)
        for i, p in enumerate(self._template):
            # Draw for every param every step so the stream does not depend on the None pattern.
            values = torch.randn(p.shape, generator=self._gen, dtype=p.dtype)
            g = torch.empty_strided(p.shape, p.stride(), dtype=p.dtype, device=p.device)
            none = _grad_is_none(i, count, step, self._total_steps)
            out.append(None if none else g.copy_(values))
        return out


def _grad_is_none(i: int, count: int, step: int, total_steps: int) -> bool:
    """No grad for param ``i`` of ``count`` at ``step``: odd params on 1 step in 5 (staggered), the
    last one from the middle of the run on (frozen)."""
    frozen = i == count - 1 and step >= total_steps // 2
    return frozen or (i % 2 == 1 and (3 * i + step) % 5 == 4)


def _label(i: int, p: torch.Tensor) -> str:
    layout = "" if p.is_contiguous() else ", non-contiguous"
    return f"param[{i}] (shape {tuple(p.shape)}{layout})"


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    a64 = a.detach().to("cpu", torch.float64)
    b64 = b.detach().to("cpu", torch.float64)
    same = (a64 == b64) | (a64.isnan() & b64.isnan())  # equal infs and NaN-vs-NaN count as 0
    diff = torch.where(same, torch.zeros_like(a64), (a64 - b64).abs())
    return float(torch.nan_to_num(diff, nan=math.inf).max())


_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit patterns (so -0.0 differs from 0.0), any NaN equal to any NaN."""
    if a.is_complex():
        a, b = torch.view_as_real(a.resolve_conj()), torch.view_as_real(b.resolve_conj())
    ints = _INT_OF_SIZE[a.element_size()]
    a_bits, b_bits = a.detach().contiguous().view(ints), b.detach().contiguous().view(ints)
    if torch.equal(a_bits, b_bits):
        return True
    return bool(((a_bits == b_bits) | (a.isnan() & b.isnan())).all())


def _tensors_match(a: torch.Tensor, b: torch.Tensor, crit: _Criteria) -> bool:
    exact_only = not (a.is_floating_point() or a.is_complex())
    if crit.mode == "tolerance" and not exact_only:
        return torch.allclose(a, b, rtol=crit.rtol, atol=crit.atol, equal_nan=True)
    if crit.bits and not exact_only:
        return _same_bits(a, b)
    if torch.equal(a, b):
        return True
    # NaN-aware equality; note -0.0 == 0.0 here (values, not bit patterns, are compared).
    return not exact_only and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _compare_values(a: Any, b: Any, what: str, crit: _Criteria) -> tuple[float, str | None]:
    """(max |diff|, None) when ``a`` matches ``b``, else (max |diff|, what differed)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return math.inf, f"{what} is {type(a).__name__} vs {type(b).__name__}"
        if a.dtype != b.dtype or a.shape != b.shape:
            return math.inf, (f"{what} is {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}")
        if not crit.bits and torch.equal(a, b):  # the common case, without _max_abs_diff's copies
            return 0.0, None
        ok = _tensors_match(a, b, crit)
        diff = 0.0 if ok and crit.mode == "bitwise" else _max_abs_diff(a, b)
        bits = "; bit patterns differ" if diff == 0 else ""
        return diff, None if ok else f"{what} differs (max |diff| = {diff:.3g}{bits})"
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            only_a = sorted(map(str, set(a) - set(b)))
            only_b = sorted(map(str, set(b) - set(a)))
            return math.inf, f"{what or 'snapshot'} keys differ: {only_a} vs {only_b}"
        worst = 0.0
        for key in a:
            where = f"{what}[{key!r}]" if what else str(key)  # top level: a snapshot label
            diff, msg = _compare_values(a[key], b[key], where, crit)
            worst = max(worst, diff)
            if msg:
                return worst, msg
        return worst, None
    if isinstance(a, collections.deque) and type(a) is type(b) and a.maxlen != b.maxlen:
        return math.inf, f"{what} has maxlen {a.maxlen} vs {b.maxlen}"
    if isinstance(a, list | tuple | collections.deque) and type(a) is type(b):
        if len(a) != len(b):
            return math.inf, f"{what} has length {len(a)} vs {len(b)}"
        return _compare_values(dict(enumerate(a)), dict(enumerate(b)), what, crit)
    if isinstance(a, float) and isinstance(b, float):
        if (math.isnan(a) and math.isnan(b)) or a == b:
            return 0.0, None
        diff = abs(a - b)
        ok = crit.mode == "tolerance" and diff <= crit.atol + crit.rtol * abs(a)
        return diff, None if ok else f"{what} is {a!r} vs {b!r}"
    try:
        equal = bool(a == b)
    except Exception:  # e.g. an array-valued ==; treat as different, with the values shown
        equal = False
    return 0.0, None if equal else f"{what} is {a!r} vs {b!r}"


# -- snapshots: everything an optimizer keeps, as plain data ------------------------------------


@functools.cache
def _torch_bookkeeping() -> frozenset[str]:
    """Attributes that are torch's, not the optimizer's results: whatever a bare SGD keeps on self
    (param_groups, state, defaults, six hook dicts, the profiler name, a warned flag), plus what
    torch.optim.lr_scheduler patches onto an optimizer."""
    bare = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    return frozenset(vars(bare)) | {"_opt_called", "_patched_step", "_step_count"}


def is_bookkeeping(name: str) -> bool:
    """torch's bookkeeping, warned-once flags, and gsr-rewrite's own caches (``_gsr_plans`` and
    ``_gsr_replays`` of the Triton runtime, on R-variants only)."""
    return name in _torch_bookkeeping() or name.startswith(("_warned", "_gsr"))


#: Nesting followed inside what an optimizer keeps on self; deeper values compare as `_Opaque`.
_MAX_DEPTH = 8
_SCALARS = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device)


class _Opaque:
    """A value that is not plain data. Equal when ``==`` says so; where ``==`` cannot tell two
    runs' objects apart meaningfully (identity-based, or raising) equal when of the same type.
    Bound methods count as identity-based: theirs compares ``__self__``, one optimizer per run."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Opaque) or type(self.value) is not type(other.value):
            return False
        try:
            if bool(self.value == other.value):
                return True
        except Exception:  # a tensor-valued or otherwise unusable ==
            return True
        eq: Any = type(self.value).__eq__
        return eq is object.__eq__ or callable(self.value)  # identity-based ==

    def __repr__(self) -> str:
        return f"<{type(self.value).__qualname__}>"


@dataclass
class _SnapshotContext:
    root: Optimizer
    labels: dict[int, str]  # id(param) -> label; a param found elsewhere stands for its label
    open: set[int]  # ids of the containers being converted (a cycle compares as `_Opaque`)


def _plain(value: Any, ctx: _SnapshotContext, depth: int) -> Any:
    """``value`` as data `_compare_values` compares: tensors, scalars, dicts, lists, tuples."""
    if isinstance(value, torch.Tensor):
        label = ctx.labels.get(id(value))  # a param: its values are compared under its label
        return value if label is None else f"<{label}>"
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, torch.Generator):
        return value.get_state()
    if value is ctx.root:
        return "<self>"
    if depth > _MAX_DEPTH or id(value) in ctx.open:
        return _Opaque(value)
    ctx.open.add(id(value))
    try:
        if isinstance(value, dict):
            return {_plain_key(k, i, ctx): _plain(v, ctx, depth + 1)
                    for i, (k, v) in enumerate(value.items())}
        if isinstance(value, list | collections.deque):
            return [_plain(v, ctx, depth + 1) for v in value]
        if isinstance(value, tuple):
            return tuple(_plain(v, ctx, depth + 1) for v in value)
        if isinstance(value, Optimizer):
            return _describe(value, ctx, depth + 1, prefix="inner ")
        return _Opaque(value)
    finally:
        ctx.open.discard(id(value))


def _plain_key(key: Any, position: int, ctx: _SnapshotContext) -> Any:
    """A dict key comparable across runs: a param's label, else the key itself when it is a
    scalar, else its type and position."""
    if isinstance(key, torch.Tensor):
        return ctx.labels.get(id(key), f"<tensor key #{position}>")
    if isinstance(key, _SCALARS):
        return key
    return f"<{type(key).__qualname__} key #{position}>"


def _describe(opt: Optimizer, ctx: _SnapshotContext, depth: int, prefix: str = "",
              attributes: bool = True) -> dict[str, Any]:
    """Params, then each param's state, then group options, then what the optimizer keeps on
    self besides torch's bookkeeping. An inner optimizer labels params it shares with the outer
    one like the outer one does; its own with ``prefix``."""
    params = [p for g in opt.param_groups for p in g["params"]]
    labels = [ctx.labels.setdefault(id(p), prefix + _label(i, p)) for i, p in enumerate(params)]
    snap: dict[str, Any] = {label: p.data for label, p in zip(labels, params, strict=True)}
    for label, p in zip(labels, params, strict=True):
        # .get: optimizer.state is a defaultdict; indexing would create entries.
        snap[f"state of {label}"] = _plain(opt.state.get(p, {}), ctx, depth)
    listed = set(map(id, params))
    for i, (key, value) in enumerate(opt.state.items()):
        if id(key) not in listed:  # state under any other key
            snap[f"state[{_plain_key(key, i, ctx)}]"] = _plain(value, ctx, depth)
    for k, g in enumerate(opt.param_groups):
        options = {key: v for key, v in g.items() if key != "params"}
        snap[f"param_groups[{k}]"] = _plain(options, ctx, depth)
    for name, value in vars(opt).items() if attributes else ():
        if not is_bookkeeping(name):
            snap[f"self.{name}"] = _plain(value, ctx, depth)
    return snap


def _snapshot(opt: Optimizer, attributes: bool = True) -> dict[str, Any]:
    """Everything compared, in order: params, each param's state, group options, and (unless
    ``attributes`` is False) the other attributes on self."""
    ctx = _SnapshotContext(root=opt, labels={}, open=set())
    return _describe(opt, ctx, depth=0, attributes=attributes)


# -- lockstep -------------------------------------------------------------------------------------


@dataclass
class _Run:
    label: str
    optimizer: Optimizer
    params: list[Parameter]


#: ``feed(step)`` prepares one step's gradients and returns what installs them into one run (its
#: own copies; or, for autograd accumulation, runs its zero_grad and backward passes).
_Feed = Callable[[int], Callable[[_Run], None]]
#: What a run raised, with the sentence that reports it; None: it did not raise.
_Raised = tuple[Exception, str] | None


def _schedule_feed(schedule: _GradSchedule) -> _Feed:
    def at(step: int) -> Callable[[_Run], None]:
        grads = schedule.grads(step)

        def install(run: _Run) -> None:
            for p, g in zip(run.params, grads, strict=True):
                p.grad = None if g is None else g.clone()  # own copy: a step may scribble on it

        return install

    return at


@dataclass
class _Outcome:
    worst: float = 0.0
    failure: str | None = None
    not_applicable: str | None = None  # the original raised; every other run raised alike


def _judge(where: str, labels: Sequence[str], raised: Sequence[_Raised],
           same_error_ok: bool) -> _Outcome:
    """Some run raised. With ``same_error_ok``, the original (first) raising and every other run
    raising the same exception type means the scenario is not applicable; anything else fails."""
    first = raised[0]
    if same_error_ok and first is not None:
        for label, other in zip(labels[1:], raised[1:], strict=True):
            if other is None or type(other[0]) is not type(first[0]):
                got = other[1] if other else f"{label} did not raise"
                return _Outcome(failure=f"{where}: {first[1]} but {got}")
        return _Outcome(not_applicable=f"{where}: {first[1]}, the R-variant alike")
    text = next(r[1] for r in raised if r is not None)
    return _Outcome(failure=f"{where}: {text}")


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    initialized = torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    cuda = torch.cuda.get_rng_state_all() if initialized else []
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])


def _same_rng_state(a: tuple[torch.Tensor, list[torch.Tensor]],
                    b: tuple[torch.Tensor, list[torch.Tensor]]) -> bool:
    return all(torch.equal(x, y) for x, y in zip((a[0], *a[1]), (b[0], *b[1]), strict=True))


def _lockstep(
    runs: Sequence[_Run],
    pairs: Sequence[tuple[int, int]],
    feed: _Feed,
    steps: range,
    crit: _Criteria,
    *,
    same_error_ok: bool = False,
    attributes: bool = True,
) -> _Outcome:
    """Step all runs on the same grads (each its own clones) from the same global RNG state and
    compare runs[j] to runs[i] (`_snapshot`); a run that raises ends the comparison (`_judge`)."""
    out = _Outcome()
    labels = [run.label for run in runs]
    for step in steps:
        install = feed(step)
        start = _rng_state()
        raised: list[_Raised] = []
        ends = []
        for run in runs:
            _set_rng_state(start)  # stochastic optimizers draw the same numbers in every run
            try:
                install(run)
            except Exception as exc:
                raised.append((exc, f"{run.label} raised {exc!r} while its grads were set"))
                continue
            try:
                run.optimizer.step()
            except Exception as exc:  # reported, never a crash of the checker
                raised.append((exc, f"{run.label}.step() raised {exc!r}"))
                continue
            raised.append(None)
            ends.append(_rng_state())
        if any(r is not None for r in raised):
            verdict = _judge(f"step {step + 1}", labels, raised, same_error_ok)
            verdict.worst = out.worst
            return verdict
        _set_rng_state(ends[0])  # the stream goes on as it would for the original alone
        for i, j in pairs:
            diff, msg = _compare_values(
                _snapshot(runs[i].optimizer, attributes),
                _snapshot(runs[j].optimizer, attributes),
                "",
                crit,
            )
            if msg is None and not _same_rng_state(ends[i], ends[j]):
                msg = "the global random number generator was advanced differently"
            out.worst = max(out.worst, diff)
            if msg:
                out.failure = f"step {step + 1}: {runs[j].label} vs {runs[i].label}: {msg}"
                return out
    return out


def _new_result(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    what: str,
    kwargs: dict[str, Any],
    device: str,
    steps: int,
    crit: _Criteria,
) -> CheckResult:
    """A failed result to fill in, named distinctly within one class's check: the case
    (``what``), the configuration and foreach path, and the device when it is not the CPU."""
    names = [getattr(c, "__name__", repr(c)) for c in (original_cls, rewritten_cls)]
    tol = crit.mode == "tolerance"
    on = "" if device == "cpu" else f" on {device}"
    return CheckResult(
        name=f"{names[0]}->{names[1]} {what} ({_config_label(kwargs)}){on}",
        config=dict(kwargs),
        device=device,
        steps=steps,
        mode=crit.mode,
        max_abs_diff=0.0,
        passed=False,
        rtol=crit.rtol if tol else None,
        atol=crit.atol if tol else None,
    )


def _finish(result: CheckResult, outcome: _Outcome) -> CheckResult:
    result.max_abs_diff, result.passed = outcome.worst, outcome.failure is None
    if outcome.failure is not None:
        result.message = outcome.failure
    elif outcome.not_applicable is not None:
        result.message = f"not applicable: {outcome.not_applicable}"
        result.not_applicable = True
    return result


def compare_trajectories(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    kwargs: dict[str, Any],
    *,
    steps: int = 7,
    seed: int = 0,
    device: str = "cpu",
    mode: Mode = "bitwise",
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    dtype: torch.dtype = torch.float32,
    dense: bool = False,
) -> CheckResult:
    """Run original and R-variant side by side for ``steps`` steps; compare after every step."""
    crit = _Criteria(mode, rtol, atol)
    what = "trajectory, dense" if dense else "trajectory"
    result = _new_result(original_cls, rewritten_cls, what, kwargs, device, steps, crit)
    params_o = make_problem(seed, device, dtype, dense)
    params_r = _clone_params(params_o)
    try:
        runs = [
            _Run("original", original_cls(params_o, **kwargs), params_o),
            _Run("R-variant", rewritten_cls(params_r, **kwargs), params_r),
        ]
    except Exception as exc:
        result.message = f"constructor raised {exc!r}"
        return result
    feed = _schedule_feed(_GradSchedule(params_o, seed, steps))
    return _finish(result, _lockstep(runs, [(0, 1)], feed, range(steps), crit))


def check_state_dict_swap(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    kwargs: dict[str, Any],
    *,
    steps_before: int = 4,
    steps_after: int = 4,
    seed: int = 0,
    device: str = "cpu",
    mode: Mode = "bitwise",
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    dtype: torch.dtype = torch.float32,
    dense: bool = False,
) -> CheckResult:
    """Checkpoints move both ways: original -> R-variant and R-variant -> original.

    Original and R-variant run ``steps_before`` steps in lockstep; their ``state_dict()`` must
    match. Then a fresh R-variant loads the original's checkpoint and a fresh original loads the
    R-variant's; both continue ``steps_after`` steps next to the original and must match it.
    """
    crit = _Criteria(mode, rtol, atol)
    return _state_dict_swap(original_cls, rewritten_cls, kwargs, steps_before, steps_after,
                            lambda: make_problem(seed, device, dtype, dense), seed, crit)


def _state_dict_swap(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    kwargs: dict[str, Any],
    steps_before: int,
    steps_after: int,
    new_params: Callable[[], list[Parameter]],
    seed: int,
    crit: _Criteria,
    *,
    same_error_ok: bool = False,
    what: str = "state_dict swap",
) -> CheckResult:
    """`check_state_dict_swap` on the params ``new_params()`` makes (equal ones at every call);
    ``what`` names the run."""
    total = steps_before + steps_after
    device = str(new_params()[0].device)
    result = _new_result(original_cls, rewritten_cls, what, kwargs, device, total, crit)

    def build(cls: OptimizerClass, label: str, options: dict[str, Any]) -> _Run:
        params = new_params()
        return _Run(label, cls(params, **kwargs), params)

    runs, outcome = _build_pair(build, original_cls, rewritten_cls, [{}], same_error_ok)
    if outcome is not None:
        return _finish(result, outcome)
    orig, rvar = runs
    feed = _schedule_feed(_GradSchedule(orig.params, seed, total))
    try:
        outcome = _lockstep(runs, [(0, 1)], feed, range(steps_before), crit,
                            same_error_ok=same_error_ok)
        if outcome.failure is None and outcome.not_applicable is None:
            # deepcopy = a saved checkpoint: load_state_dict may keep the very tensors it is given.
            sd_o = copy.deepcopy(orig.optimizer.state_dict())
            sd_r = copy.deepcopy(rvar.optimizer.state_dict())
            diff, msg = _compare_values(sd_o, sd_r, "state_dict()", crit)
            outcome.worst = max(outcome.worst, diff)
            if msg is not None:
                outcome.failure = f"after step {steps_before}: R-variant vs original: {msg}"
        if outcome.failure is None and outcome.not_applicable is None:
            # the reference is the original loaded from its own checkpoint: load_state_dict
            # itself changes some state (a deque loses its maxlen), for both classes alike
            to_ref = _clone_params(orig.params)
            to_r = _clone_params(orig.params)
            to_o = _clone_params(rvar.params)
            runs = [
                _Run("original loaded from original", original_cls(to_ref, **kwargs), to_ref),
                _Run("R-variant loaded from original", rewritten_cls(to_r, **kwargs), to_r),
                _Run("original loaded from R-variant", original_cls(to_o, **kwargs), to_o),
            ]
            runs[0].optimizer.load_state_dict(copy.deepcopy(sd_o))
            runs[1].optimizer.load_state_dict(sd_o)
            runs[2].optimizer.load_state_dict(sd_r)
            # attributes on self: not in a checkpoint, so a loaded original lacks them as well
            after = _lockstep(runs, [(0, 1), (0, 2)], feed, range(steps_before, total), crit,
                              same_error_ok=same_error_ok, attributes=False)
            after.worst = max(outcome.worst, after.worst)
            outcome = after
    except Exception as exc:  # load_state_dict, state_dict
        outcome = _Outcome(math.inf, f"raised {exc!r}")
    return _finish(result, outcome)


def _build_pair(
    build: Callable[[OptimizerClass, str, dict[str, Any]], _Run],
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    options: Sequence[dict[str, Any]],
    same_error_ok: bool,
) -> tuple[list[_Run], _Outcome | None]:
    """The original's and the R-variant's run, or the outcome when a constructor raised. The
    original settles which of ``options`` (passed on to ``build``) both use: the first it takes."""
    runs: list[_Run] = []
    raised: list[_Raised] = []
    for label, cls in (("original", original_cls), ("R-variant", rewritten_cls)):
        error: _Raised = None
        for option in options:
            try:
                runs.append(build(cls, label, option))
            except Exception as exc:
                error = (exc, f"{label} raised {exc!r}")
                continue
            error, options = None, [option]
            break
        else:
            options = [options[-1]]  # the R-variant gets the option the original raised on last
        raised.append(error)
    if any(r is not None for r in raised):
        return runs, _judge("constructor", ["original", "R-variant"], raised, same_error_ok)
    return runs, None


def _accepts(cls: OptimizerClass, name: str) -> bool:
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def run_checks(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    configs: list[dict[str, Any]],
    *,
    steps: int = 7,
    device: str = "cpu",
    mode: Mode = "bitwise",
) -> list[CheckResult]:
    """Trajectory + state-dict swap per config, on foreach=False and foreach=True when the
    constructor takes ``foreach`` and the config does not pin it."""
    results: list[CheckResult] = []
    for config in configs:
        variants = [config]
        if "foreach" not in config and _accepts(original_cls, "foreach"):
            variants = [{**config, "foreach": False}, {**config, "foreach": True}]
        for kw in variants:
            for dense in (False, True):  # dense: the only problem where foreach reuse runs
                results.append(
                    compare_trajectories(
                        original_cls, rewritten_cls, kw, steps=steps, device=device, mode=mode,
                        dense=dense,
                    )
                )
            results.append(
                check_state_dict_swap(original_cls, rewritten_cls, kw, device=device, mode=mode)
            )
    return results


def measure_pair(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    kwargs: dict[str, Any],
    *,
    device: str = "cpu",
) -> tuple[StepMemory, StepMemory]:
    """Temporaries of one step of each, on 8 equal 64x64 params (units = x param size)."""

    def measure(cls: OptimizerClass) -> StepMemory:
        return measure_temporaries(lambda ps: cls(ps, **kwargs), MEASURE_SHAPES, device=device)

    return measure(original_cls), measure(rewritten_cls)


# -- the stress matrix ----------------------------------------------------------------------------

#: Constructor options that choose an implementation, not the arithmetic: never varied.
PATH_OPTIONS = ("foreach", "fused", "differentiable", "capturable")


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _nonzero(name: str, option: inspect.Parameter) -> float:
    """A small value for an option that defaults to 0: 0.5 for momentum and betas, 0.05 for other
    floats (weight decay, dampening), 1 for ints."""
    if "momentum" in name.lower() or "beta" in name.lower():
        return 0.5
    if isinstance(option.default, float) or "float" in str(option.annotation):
        return 0.05
    return 1


def _probe(cls: OptimizerClass, kwargs: dict[str, Any]) -> Optimizer:
    """``cls`` on one 2 x 3 param: 2-D, which every optimizer takes (Muon takes nothing else)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls([Parameter(torch.zeros(2, 3))], **kwargs)


def _constructs(cls: OptimizerClass, kwargs: dict[str, Any]) -> bool:
    try:
        _probe(cls, kwargs)
    except Exception:
        return False
    return True


def stress_configs(cls: OptimizerClass) -> list[dict[str, Any]]:
    """The defaults; each boolean option flipped; each numeric option that defaults to 0 set to a
    small value (`_nonzero`), alone and all together. Tuple options keep their defaults, as do
    `PATH_OPTIONS`. Configurations the constructor rejects are dropped, except that a flipped flag
    the constructor rejects alone (nesterov without momentum) is retried with each numeric value
    in turn and kept with the first it accepts."""
    options = {name: o for name, o in _constructor_options(cls).items()
               if name not in PATH_OPTIONS and o.default is not o.empty}
    flips: list[dict[str, Any]] = [{name: not o.default} for name, o in options.items()
                                   if isinstance(o.default, bool)]
    numeric = {name: _nonzero(name, o) for name, o in options.items()
               if _is_number(o.default) and o.default == 0}
    singles: list[dict[str, Any]] = [{name: v} for name, v in numeric.items()]
    together = [dict(numeric)] if len(numeric) > 1 else []
    configs: list[dict[str, Any]] = []
    for config in [{}, *flips, *singles, *together]:
        tries: list[dict[str, Any]] = [config]
        if config in flips:
            tries += [{**config, name: v} for name, v in numeric.items()]
        configs += next(([c] for c in tries if _constructs(cls, c)), [])
    return configs


def _constructor_options(cls: OptimizerClass) -> dict[str, inspect.Parameter]:
    """The keyword options of ``cls(...)``; where ``__init__`` takes ``**kwargs``, also those of
    the next ``__init__`` up the MRO (``class X(Adam): def __init__(self, params, **kw)``)."""
    inits = [vars(c)["__init__"] for c in cls.__mro__ if "__init__" in vars(c)
             and c not in (Optimizer, object)] if isinstance(cls, type) else [cls]
    options: dict[str, inspect.Parameter] = {}
    for init in inits:
        try:
            parameters = inspect.signature(init).parameters
        except (TypeError, ValueError):
            break
        for name, option in parameters.items():
            if option.kind in (option.POSITIONAL_OR_KEYWORD, option.KEYWORD_ONLY):
                options.setdefault(name, option)
        if not any(o.kind == o.VAR_KEYWORD for o in parameters.values()):
            break
    return options


@dataclass(frozen=True)
class _Case:
    """One scenario of the stress matrix."""

    name: str
    dense: bool = True  # every param contiguous: only then do foreach reuse guards pass
    two_groups: bool = False
    duplicate: bool = False  # one param listed twice in its group
    grads: Literal["own", "overlap", "bucket", "autograd"] = "own"
    tensor_lr: bool = False
    dtype: torch.dtype = torch.float32


_STRESS_CASES = (
    _Case("two groups, odd shapes", dense=False, two_groups=True),
    _Case("two groups, dense", two_groups=True),
    _Case("duplicate param", duplicate=True),
    _Case("overlapping grads", grads="overlap"),
    _Case("bucket-view grads", grads="bucket"),
    _Case("autograd accumulation", grads="autograd"),
    _Case("tensor lr", tensor_lr=True),
    _Case("bf16", dtype=torch.bfloat16),
)


@dataclass(frozen=True)
class _Problem:
    """The params of a stress case. The last one is frozen from the middle of the run on (no
    grad; with autograd, requires_grad=False)."""

    shapes: tuple[tuple[int, ...], ...]
    noncontiguous: int  # a 2-D param built transposed unless the case is dense
    duplicate: int  # listed a second time (last) in the duplicate case
    split: int  # two groups: params[:split] and params[split:]


# Ranks 0 to 4, a 0-size and a 1-element param, one non-contiguous (odd problem only), and one of
# 201 elements: more than 3 strips of runtime.STRIP_ALIGN (64). 9 params, 297 elements: the cost
# of a step is the per-tensor overhead, whatever the optimizer.
_ALL_SHAPES = _Problem(((), (3,), (4, 5), (3, 67), (0, 3), (1,), (5, 7), (2, 3, 4), (2, 1, 3, 2)),
                       noncontiguous=6, duplicate=2, split=5)
# Where the original raises on that mix (Adafactor on the 0-size param; Muon takes 2-D params
# only), the case runs again on non-empty 2-D params: a case is not applicable only if both raise.
_2D_SHAPES = _Problem(((4, 5), (3, 67), (5, 7), (2, 12)), noncontiguous=2, duplicate=0, split=2)


def _stress_params(problem: _Problem, case: _Case, seed: int, device: str) -> list[Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for i, shape in enumerate(problem.shapes):
        if i == problem.noncontiguous and not case.dense:
            t = torch.randn(shape[::-1], generator=gen).t()
        else:
            t = torch.randn(shape, generator=gen)
        params.append(Parameter(t.to(device=device, dtype=case.dtype)))  # keeps strides
    return params


def _param_groups(problem: _Problem, case: _Case, params: list[Parameter],
                  second: dict[str, Any]) -> list[Any]:
    if case.two_groups:
        return [{"params": params[:problem.split]}, {"params": params[problem.split:], **second}]
    if case.duplicate:
        return [*params, params[problem.duplicate]]
    return list(params)


def _second_group_options(original_cls: OptimizerClass,
                          kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """Options of the second group, in the order to try them: lr halved and every other positive
    float option of ``defaults`` (tuples of floats element-wise) scaled by 0.9; then lr alone,
    for optimizers that reject some of those."""
    try:
        defaults = _probe(original_cls, kwargs).defaults
    except Exception:  # the real constructor raises too; the case reports it
        return [{}]
    scaled: dict[str, Any] = {}
    for key, value in defaults.items():
        if key == "lr" and _is_number(value):
            scaled[key] = value / 2
        elif key not in PATH_OPTIONS and isinstance(value, float) and value > 0:
            scaled[key] = value * 0.9
        elif isinstance(value, tuple) and value and all(isinstance(v, float) for v in value):
            scaled[key] = tuple(v * 0.9 for v in value)
    lr_only = {key: v for key, v in scaled.items() if key == "lr"}
    return [scaled, lr_only] if scaled != lr_only else [scaled]


def _flat_feed(template: list[Parameter], seed: int, steps: int, overlap: bool) -> _Feed:
    """All grads are views of one flat buffer, a new one per run and step with equal values.
    Bucket: back to back in reverse param order (DDP fills its buckets about in reverse), no two
    sharing an element. Overlap: in param order, each starting halfway into the previous one."""
    offsets, end = [0] * len(template), 0
    for i in range(len(template)) if overlap else reversed(range(len(template))):
        offsets[i] = end
        n = template[i].numel()
        end += -(-n // 2) if overlap else n
    size = max(off + p.numel() for off, p in zip(offsets, template, strict=True))
    gen = torch.Generator().manual_seed(seed + 1_000_003)

    def at(step: int) -> Callable[[_Run], None]:
        values = torch.randn(size, generator=gen).to(template[0].device, template[0].dtype)

        def install(run: _Run) -> None:
            flat = values.clone()
            for i, (p, off) in enumerate(zip(run.params, offsets, strict=True)):
                none = _grad_is_none(i, len(offsets), step, steps)
                p.grad = None if none else flat[off:off + p.numel()].view(p.shape)

        return install

    return at


def _autograd_feed(template: list[Parameter], seed: int, steps: int) -> _Feed:
    """``zero_grad(set_to_none=False)``, then two ``backward()`` of ``sum((p * c_k).sum())`` with
    seeded coefficients: autograd zeroes and accumulates into the very grad tensors the R-variant
    used as scratch. The last param gets ``requires_grad=False`` from the middle of the run on."""
    gen = torch.Generator().manual_seed(seed + 1_000_003)

    def at(step: int) -> Callable[[_Run], None]:
        coefficients = [[torch.randn(p.shape, generator=gen).to(p.device, p.dtype)
                         for p in template] for _ in range(2)]

        def install(run: _Run) -> None:
            if step >= steps // 2:
                run.params[-1].requires_grad_(False)
            run.optimizer.zero_grad(set_to_none=False)
            with torch.enable_grad():
                for cs in coefficients:
                    terms = [(p * c).sum() for p, c in zip(run.params, cs, strict=True)
                             if p.requires_grad]
                    torch.autograd.backward(torch.stack(terms).sum())

        return install

    return at


def _stress_feed(case: _Case, template: list[Parameter], seed: int, steps: int) -> _Feed:
    if case.grads == "autograd":
        return _autograd_feed(template, seed, steps)
    if case.grads == "own":
        return _schedule_feed(_GradSchedule(template, seed, steps))
    return _flat_feed(template, seed, steps, overlap=case.grads == "overlap")


def _config_label(kwargs: dict[str, Any]) -> str:
    path = {k: v for k, v in kwargs.items() if k == "foreach"}
    config = [f"{k}={v!r}" for k, v in kwargs.items() if k != "foreach"] or ["defaults"]
    return ", ".join(config + [f"{k}={v!r}" for k, v in path.items()])


def _stress_case(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    case: _Case,
    kwargs: dict[str, Any],
    *,
    seed: int,
    steps: int,
    device: str,
    crit: _Criteria,
) -> CheckResult:
    if case.dtype == torch.bfloat16:
        crit = _Criteria(crit.mode, max(crit.rtol, BF16_RTOL), max(crit.atol, BF16_ATOL), crit.bits)
    what = f"stress {case.name}"

    def new_result() -> CheckResult:
        result = _new_result(original_cls, rewritten_cls, what, kwargs, device, steps, crit)
        result.case = case.name
        return result

    run_kwargs = dict(kwargs)
    if case.tensor_lr:
        lr = kwargs.get("lr", _default_lr(original_cls, kwargs))
        if not _is_number(lr):
            return _finish(new_result(), _Outcome(not_applicable="no float lr option"))
        run_kwargs["lr"] = torch.tensor(float(lr))  # cloned for each run

    return _with_2d_fallback(lambda problem: _finish(new_result(), _stress_outcome(
        original_cls, rewritten_cls, problem, case, run_kwargs,
        seed=seed, steps=steps, device=device, crit=crit)))


def _with_2d_fallback(run: Callable[[_Problem], CheckResult]) -> CheckResult:
    """``run`` on every shape; where that is not applicable (the original raises), on 2-D params,
    with a message that says so."""
    result = run(_ALL_SHAPES)
    if not result.not_applicable:
        return result
    why = "with every shape, " + result.message.removeprefix("not applicable: ")
    plain = run(_2D_SHAPES)
    if plain.not_applicable:
        plain.message = f"not applicable: {why}; with 2-D params, " + \
            plain.message.removeprefix("not applicable: ")
    elif not plain.passed:
        plain.message = f"{plain.message} (on 2-D params only: {why})"
    else:
        plain.message = f"compared on 2-D params only: {why}"
    return plain


def _stress_outcome(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    problem: _Problem,
    case: _Case,
    kwargs: dict[str, Any],
    *,
    seed: int,
    steps: int,
    device: str,
    crit: _Criteria,
) -> _Outcome:
    def build(cls: OptimizerClass, label: str, second: dict[str, Any]) -> _Run:
        params = _stress_params(problem, case, seed, device)
        kw = {**kwargs, "lr": kwargs["lr"].clone()} if case.tensor_lr else kwargs
        return _Run(label, cls(_param_groups(problem, case, params, second), **kw), params)

    options = _second_group_options(original_cls, kwargs) if case.two_groups else [{}]
    runs, outcome = _build_pair(build, original_cls, rewritten_cls, options, same_error_ok=True)
    if outcome is not None:
        return outcome
    feed = _stress_feed(case, runs[0].params, seed, steps)
    return _lockstep(runs, [(0, 1)], feed, range(steps), crit, same_error_ok=True)


def _stress_swap(original_cls: OptimizerClass, rewritten_cls: OptimizerClass,
                 kwargs: dict[str, Any], *, steps: int, device: str,
                 crit: _Criteria) -> CheckResult:
    """The state-dict swap (half the steps before, half after) on the odd-shaped stress params;
    on 2-D params where the original raises on those."""
    odd = _Case("state_dict swap", dense=False)

    def run(problem: _Problem) -> CheckResult:
        result = _state_dict_swap(
            original_cls, rewritten_cls, kwargs, steps // 2, steps - steps // 2,
            functools.partial(_stress_params, problem, odd, 0, device), 0, crit,
            same_error_ok=True, what=f"stress {odd.name}",
        )
        result.case = odd.name
        return result

    return _with_2d_fallback(run)


def _default_lr(cls: OptimizerClass, kwargs: dict[str, Any]) -> Any:
    """The lr a group gets when the constructor is not given one (None: no lr option)."""
    try:
        return _probe(cls, kwargs).defaults.get("lr")
    except Exception:
        return None


def foreach_paths(cls: OptimizerClass) -> list[dict[str, Any]]:
    """The constructor options of each foreach path: none when it takes no ``foreach``."""
    return [{"foreach": False}, {"foreach": True}] if _accepts(cls, "foreach") else [{}]


def stress_matrix(
    original_cls: OptimizerClass,
    rewritten_cls: OptimizerClass,
    *,
    mode: Mode = "bitwise",
    steps: int = 8,
    device: str = "cpu",
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
) -> list[CheckResult]:
    """Every `stress_configs` configuration on each foreach path, in every `_STRESS_CASES`
    scenario for ``steps`` steps, compared after each step (bitwise: bit patterns); plus a
    state-dict swap per path on the first configuration (the defaults).

    Where the original raises (constructor or a step), the R-variant must raise the same exception
    type at the same point, and the case runs again on non-empty 2-D params (`_2D_SHAPES`); it is
    "not applicable" (passed, ``not_applicable`` set) only if the original raises there too. A
    foreach path where no case could be compared, and an original that no configuration
    constructs, give a failed result: nothing was checked.

    Cost: 50 results for torch.optim.AdamW (3 configurations x 2 paths x 8 cases + 2 swaps) in
    about 0.5 s on 2 CPU cores, tensors being tiny (297 elements): per-call overhead dominates.
    """
    crit = _Criteria(mode, rtol, atol, bits=True)
    configs = stress_configs(original_cls)
    if not configs:
        result = _new_result(original_cls, rewritten_cls, "stress", {}, device, steps, crit)
        result.message = "the constructor rejects every configuration, the defaults included"
        return [result]
    results: list[CheckResult] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate params, tensor lr...: the results decide
        for path in foreach_paths(original_cls):
            cases = [_stress_case(original_cls, rewritten_cls, case, {**config, **path},
                                  seed=seed, steps=steps, device=device, crit=crit)
                     for config in configs for seed, case in enumerate(_STRESS_CASES)]
            results += cases
            if all(r.not_applicable for r in cases):  # e.g. a step that needs a closure
                result = _new_result(original_cls, rewritten_cls, "stress", path, device, steps,
                                     crit)
                result.message = f"no case could be compared; first: {cases[0].message}"
                results.append(result)
            results.append(_stress_swap(original_cls, rewritten_cls, {**configs[0], **path},
                                        steps=steps, device=device, crit=crit))
    return results
