"""Host side of the Triton backend: which groups run a kernel, pointer tables, launches.

``fused_step`` is the ``step`` of every generated Triton class.  Per param group it picks the
first specialization (:class:`KernelSpec`) whose fixed group values and guards hold, and
launches its kernel once per dtype signature over all the group's tensors.  Specializations come
from a :class:`Specializations` source (``gsr_rewrite.triton_backend.specialize.KernelCache``:
traced the first time a group's configuration is met, cached on disk), or, in Triton modules
generated before that existed, from a fixed tuple.  A group runs the eager R-variant instead
(never an error) when any tensor does not qualify (not on a device Triton runs on, not
contiguous, sparse, complex or float64, a different shape of state), when its state is not
initialised yet (the first step is always eager) or when no specialization matches.
No parameter-sized buffer is allocated: tables are O(tensors + chunks) integers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any, Protocol

import torch

CHUNK = 16384  # elements per program; H100: 8192-16384 reached 99 % of copy bandwidth
BLOCK = 1024  # elements per inner iteration (4 warps: no register spills)
NUM_WARPS = 4
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
#: tests and benchmarks read these; "traces": configurations traced (specialize.KernelCache)
COUNTS = {"launches": 0, "eager_groups": 0, "kernel_groups": 0, "traces": 0}


@dataclass(frozen=True)
class KernelSpec:
    """One traced specialization of an optimizer's step (a ``SPEC`` emitted by
    ``gsr_rewrite.triton_backend.specialize``)."""

    kernels: tuple[Any, ...]  # triton JITFunctions, one per pass (two with reductions)
    reductions: int  # per-tensor reductions pass 1 leaves as per-chunk partial sums
    roles: tuple[str, ...]  # pointer-table columns: "param", "grad", state keys
    fixed: dict[str, tuple[Any, ...]]  # group key -> values the program was traced with
    scalars: dict[str, tuple[str, str, int | None]]  # symbol -> (group|state, key, index)
    guard: Callable[[dict[str, Any]], bool]
    slots: Callable[[dict[str, Any]], tuple[float, ...]]
    updates: Callable[[dict[str, Any]], dict[str, Any]]
    state_keys: frozenset[str] = field(default_factory=frozenset)


class Specializations(Protocol):
    """Where ``fused_step`` finds the specializations of one optimizer class."""

    @property
    def specs(self) -> Sequence[KernelSpec]:
        """Every specialization known so far, tried in order."""

    def specialize(self, group: dict[str, Any]) -> Sequence[KernelSpec]:
        """New specializations for ``group``'s configuration (none when it was met before)."""


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _qualifies(t: torch.Tensor | None, like: torch.Tensor) -> bool:
    return (isinstance(t, torch.Tensor) and t.dtype in _FLOATS and not t.is_sparse
            and t.device == like.device and t.shape == like.shape and t.is_contiguous())


def _device_ok(p: torch.Tensor) -> bool:
    return p.is_cuda or (_interpreting() and p.device.type == "cpu")


def _values(spec: KernelSpec, group: dict[str, Any], state: dict[Any, Any]) -> dict[str, Any]:
    by_str = {str(k): v for k, v in state.items()}
    out = {}
    for sym, (where, key, index) in spec.scalars.items():
        v: Any = group.get(key) if where == "group" else _number(by_str.get(key))
        out[sym] = v[index] if index is not None and isinstance(v, (tuple, list)) else v
    return out


def _number(v: Any) -> Any:
    """A 0-d floating tensor in state (torch.optim's step counter) holds a host scalar."""
    if isinstance(v, torch.Tensor) and v.dim() == 0 and v.dtype.is_floating_point:
        return v.item()
    return v


def _matches(spec: KernelSpec, group: dict[str, Any], values: dict[str, Any]) -> bool:
    if any(group.get(k) not in allowed for k, allowed in spec.fixed.items()):
        return False
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values.values()):
        return False
    try:
        return bool(spec.guard(values))
    except (ArithmeticError, TypeError, ValueError):
        return False


@dataclass
class _Plan:
    """Pointer and chunk tables for one list of parameters, built once.

    It holds every param and state tensor (the table has their raw addresses) but not the grads:
    their column is rewritten when their addresses change (``zero_grad(set_to_none=True)``)."""

    tensors: list[list[torch.Tensor | None]]  # per param: one tensor per role, None for grad
    table: torch.Tensor  # int64 [T, roles + 3]: addresses, numel, chunk range
    chunks: torch.Tensor  # int32 [C, 2]: (tensor, chunk index)
    partials: torch.Tensor  # fp32 [C, reductions]: per-chunk partial sums between passes
    param_ptrs: list[int]  # `p.data = other` keeps the object but moves the storage
    grad_ptrs: list[int]
    aligned: bool


def _build(rows: list[list[torch.Tensor]], grad_col: int, chunk: int, reductions: int) -> _Plan:
    """Row per tensor: role addresses, numel, first and past-the-end chunk index."""
    device = rows[0][0].device
    counts = [-(-r[0].numel() // chunk) for r in rows]
    first = [sum(counts[:i]) for i in range(len(rows))]
    table = torch.tensor([[t.data_ptr() for t in r] + [r[0].numel(), f, f + c]
                          for r, f, c in zip(rows, first, counts, strict=True)], dtype=torch.int64)
    chunks = torch.tensor([(i, c) for i, n in enumerate(counts) for c in range(n)],
                          dtype=torch.int32).reshape(-1, 2)
    kept = [[None if j == grad_col else t for j, t in enumerate(r)] for r in rows]
    partials = torch.zeros(max(len(chunks), 1), max(reductions, 1), device=device)  # KBs
    return _Plan(kept, table.to(device), chunks.to(device), partials,
                 [r[0].data_ptr() for r in rows], [r[grad_col].data_ptr() for r in rows],
                 _aligned(rows))


def _aligned(rows: list[list[torch.Tensor]]) -> bool:
    return all(t.data_ptr() % 16 == 0 for r in rows for t in r)


def _plan_for(opt: Any, key: tuple[Any, ...], rows: list[list[torch.Tensor]],
              grad_col: int, reductions: int) -> _Plan:
    """The cached plan for ``key``: rebuilt when a param or state tensor was replaced (e.g. by
    ``load_state_dict``) or moved, its grad column refreshed when grad addresses changed."""
    cache: dict[tuple[Any, ...], _Plan] = opt.__dict__.setdefault("_gsr_plans", {})
    plan = cache.get(key)
    if plan is None or plan.param_ptrs != [r[0].data_ptr() for r in rows] or any(
        b is not None and a is not b
        for r, q in zip(rows, plan.tensors, strict=True) for a, b in zip(r, q, strict=True)
    ):
        plan = cache[key] = _build(rows, grad_col, CHUNK, reductions)
    grads = [r[grad_col].data_ptr() for r in rows]
    if grads != plan.grad_ptrs:
        plan.table[:, grad_col] = torch.tensor(grads, dtype=torch.int64).to(plan.table.device)
        plan.grad_ptrs, plan.aligned = grads, _aligned(rows)
    return plan


def _launch(spec: KernelSpec, plan: _Plan, slots: tuple[float, ...],
            dtypes: tuple[torch.dtype, ...]) -> None:
    if plan.chunks.shape[0] == 0:
        return
    import triton.language as tl

    to_tl = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}
    device = plan.table.device
    slot_buf = torch.tensor(slots or (0.0,), dtype=torch.float32).to(device, non_blocking=True)
    for kernel in spec.kernels:  # pass 2 reads pass 1's partials: same stream, in order
        kernel[(plan.chunks.shape[0],)](
            plan.table, plan.chunks, slot_buf, plan.partials, W=len(spec.roles) + 3, CH=CHUNK,
            BL=BLOCK, ALIGNED=plan.aligned, NP=plan.partials.shape[1], num_warps=NUM_WARPS,
            **{f"T_{ident(r)}": to_tl[d] for r, d in zip(spec.roles, dtypes, strict=True)})
        COUNTS["launches"] += 1


def ident(key: Any) -> str:
    """A state key or role as a Python identifier (kernel parameter and variable names)."""
    return re.sub(r"\W", "_", str(key))


@dataclass
class _Replay:
    """A group's last decision (spec, plans, slot inputs), replayed while what it read is unchanged:
    the same grad objects, ``opt.state`` (``load_state_dict`` replaces it) and state tensors,
    params at the same addresses, and one value per scalar-state key.  Every check is a C-level
    ``map`` over the tensors, so a step costs O(tensors) cheap comparisons instead of the general
    path's per-tensor validation.  Not noticed: a grad whose storage is swapped in place
    (``p.grad.set_``), or a state dict replaced inside ``opt.state`` by hand."""

    spec: KernelSpec
    params: list[torch.Tensor]
    states: list[dict[Any, Any]]
    keys: tuple[Any, ...]  # state keys of the tensor roles
    launches: list[tuple[_Plan, tuple[torch.dtype, ...]]]
    fingerprint: tuple[Any, ...] = ()

    def current(self, opt: Any, group: dict[str, Any]) -> tuple[Any, ...]:
        tensors = (chain.from_iterable(map(itemgetter(*self.keys), self.states))
                   if len(self.keys) > 1 else map(itemgetter(*self.keys), self.states)
                   if self.keys else ())
        return (CHUNK, tuple(map(id, map(_GRAD, group["params"]))), id(opt.state),
                len(opt.state), tuple(map(id, tensors)),
                tuple(map(torch.Tensor.data_ptr, self.params)))


_GRAD = attrgetter("grad")


def _replay(opt: Any, group: dict[str, Any], replay: _Replay) -> bool:
    if replay.current(opt, group) != replay.fingerprint:
        return False
    values = _values(replay.spec, group, replay.states[0] if replay.states else {})
    for where, key, _ in replay.spec.scalars.values():
        if where == "state":  # one launch: every param's counter holds the same value
            column = list(map(_number, map(itemgetter(key), replay.states)))
            if column.count(column[0]) != len(column):
                return False
    if not _matches(replay.spec, group, values):
        return False
    slots = replay.spec.slots(values)
    for plan, sig in replay.launches:
        _launch(replay.spec, plan, slots, sig)
    _apply_updates(replay.spec, group, replay.states, values)
    return True


def _run_group(opt: Any, group: dict[str, Any],
               kernels: Sequence[KernelSpec] | Specializations) -> bool:
    """Step ``group`` with a kernel; False (nothing done) when it must take the eager path.

    When no known specialization matches, ``kernels`` is asked for this group's configuration
    (traced, or loaded from its disk cache, the first time it is met) and those are tried."""
    replays: dict[int, _Replay] = opt.__dict__.setdefault("_gsr_replays", {})
    replay = replays.pop(id(group), None)
    if replay is not None and _replay(opt, group, replay):
        replays[id(group)] = replay
        return True
    params = [p for p in group["params"] if p.grad is not None]
    if not params:
        return False
    if not all(_device_ok(p) and _qualifies(p, p) for p in params):
        return False
    states = [opt.state.get(p) or {} for p in params]  # {}: stateless (or not initialised yet)
    if isinstance(kernels, Sequence):  # a Triton module generated with its specs inline
        return bool(_run_first(opt, group, params, states, kernels))
    done = _run_first(opt, group, params, states, kernels.specs)
    if done is None:
        done = _run_first(opt, group, params, states, kernels.specialize(group))
    return bool(done)


def _run_first(opt: Any, group: dict[str, Any], params: list[Any],
               states: list[dict[Any, Any]], specs: Sequence[KernelSpec]) -> bool | None:
    """Launch the first of ``specs`` that matches: True; False when one matches but the tensors
    cannot take it; None when none matches."""
    replays: dict[int, _Replay] = opt.__dict__["_gsr_replays"]
    for spec in specs:
        batches: dict[tuple[Any, ...], list[int]] = {}
        ok = True
        for i, st in enumerate(states):
            values = _values(spec, group, st)
            if {str(k) for k in st} != spec.state_keys or not _matches(spec, group, values):
                ok = False
                break
            batches.setdefault(tuple(sorted(values.items())), []).append(i)
        if not ok:
            continue
        rows = [[p if r == "param" else p.grad if r == "grad" else _state(states[i], r)
                 for r in spec.roles] for i, p in enumerate(params)]
        if not all(_qualifies(t, params[i]) for i, r in enumerate(rows) for t in r) or \
                len({p.device for p in params}) != 1 or not _disjoint(rows):
            return False
        launches = []
        for values_key, members in batches.items():
            values = dict(values_key)
            by_sig: dict[tuple[torch.dtype, ...], list[int]] = {}
            for i in members:
                by_sig.setdefault(tuple(t.dtype for t in rows[i]), []).append(i)
            for sig, idx in by_sig.items():
                plan = _plan_for(opt, (id(group), id(spec), sig, tuple(idx), CHUNK),
                                 [rows[i] for i in idx], spec.roles.index("grad"),
                                 spec.reductions)
                _launch(spec, plan, spec.slots(values), sig)
                launches.append((plan, sig))
            _apply_updates(spec, group, [states[i] for i in members], values)
        if len(batches) == 1:
            keys = tuple(next(k for k in states[0] if str(k) == r) for r in spec.roles[2:])
            replay = _Replay(spec, params, states, keys, launches)
            replay.fingerprint = replay.current(opt, group)
            replays[id(group)] = replay
        return True
    return None


def _disjoint(rows: list[list[torch.Tensor]]) -> bool:
    """No two tensors of the launch share memory (programs run in parallel, eager in order)."""
    spans = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size())
                   for r in rows for t in r if t.numel())
    return all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))


def _state(state: dict[Any, Any], role: str) -> Any:
    return next(v for k, v in state.items() if str(k) == role)


def _apply_updates(spec: KernelSpec, group: dict[str, Any], states: list[Any],
                   values: dict[str, Any]) -> None:
    for sym, new in spec.updates(values).items():
        where, key, _ = spec.scalars[sym]
        if where == "group":
            group[key] = new
            continue
        real = key if key in states[0] else next(k for k in states[0] if str(k) == key)
        if isinstance(states[0][real], torch.Tensor):  # a 0-d counter: same tensor, new value
            for st in states:
                st[real].fill_(new)
            continue
        for st in states:
            st[real] = new


def fused_step(opt: Any, kernels: Sequence[KernelSpec] | Specializations,
               eager_step: Callable[..., Any], closure: Callable[[], Any] | None) -> Any:
    """``step`` of a Triton R-variant: kernels where they apply, the eager R step elsewhere."""
    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    capturing = torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
    # under CUDA-graph capture the host-written slots would be frozen into the graph: eager,
    # like the original (whose Python-number step counters a graph cannot advance either)
    eager = [g for g in opt.param_groups if capturing or not _run_group(opt, g, kernels)]
    COUNTS["kernel_groups"] += len(opt.param_groups) - len(eager)
    if eager:
        COUNTS["eager_groups"] += len(eager)
        groups = opt.param_groups
        opt.param_groups = eager
        try:
            eager_step(opt)
        finally:
            opt.param_groups = groups
    return loss
