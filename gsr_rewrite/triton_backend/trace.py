"""Per-element programs of an optimizer step, for the Triton backend.

The real ``step()`` runs on :class:`~gsr_rewrite.proof.symbolic.SymTensor` parameters (3 tensors
of 2 elements; the third never has a gradient) with its *host* scalars tagged: every nonzero
float in ``param_groups`` and every int/float in ``opt.state`` becomes a :class:`TaggedFloat` /
:class:`TaggedInt` (:mod:`gsr_rewrite.triton_backend.tagged`), a real Python number that also
carries a sympy expression.  Arithmetic on tagged numbers keeps the expression
(``1 - beta1 ** step``), ``math.sqrt`` & co. are patched to keep it during the trace, comparisons
record a *guard* (``weight_decay != 0`` was True), and a float entering a tensor op is mapped back
to its expression by value.  The result is an :class:`ElementProgram`: new param and state
elements as expressions of the old ones, the gradient and a few host scalars; what the host must
do to scalar state (``step + 1``); and the conditions (fixed group values, guards) under which it
holds.

The trace is refused (:class:`KernelTraceError`, with the reason) unless it is provably
per-element and repeatable: element ``j`` of every output depends only on element ``j`` of the
inputs, identically for every tensor; no uninterpreted op (norm, matmul, random); the third
parameter is untouched; step 2 and step 3 give the same program (nothing hidden on ``self``
evolves); and a second trace with other hyperparameter values gives the same program (no host
scalar lost its tag, e.g. through ``from math import sqrt``, and no tagged value collided with a
literal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy
import torch
from sympy.core.function import AppliedUndef

from gsr_rewrite.proof.symbolic import SymbolicExecutionError, SymTensor
from gsr_rewrite.runtime.triton_launch import ident as _name
from gsr_rewrite.triton_backend.tagged import (
    KernelTraceError,
    TaggedFloat,
    TaggedInt,
    _expr,
    _guards,
    _plain,
    _symbol_values,
    _tracing,
    tag,
)

N_PARAMS, NUMEL = 3, 2  # param 2 never gets a gradient
_SCALE = (1 - 1 / 97, 1 - 2 / 89)  # trace A / trace B multiply nonzero hyperparameters by these
#: integral scalar state (step counters) at the start of the traced step, trace A / trace B: one
#: distinct value per state key, so two counters never share a value
_STARTS = ((7, 13, 19, 29, 37), (11, 17, 23, 31, 41))

__all__ = ["ElementProgram", "KernelTraceError", "element_symbol", "trace_program"]


# -- the trace ------------------------------------------------------------------------------------


@dataclass
class ElementProgram:
    """One step of one parameter tensor, element by element.

    Element symbols are ``e_<role>`` (role: ``param``, ``grad`` or a state key); host scalar
    symbols are ``h_<group key>`` and ``st_<state key>`` (see ``scalars``).
    """

    inputs: tuple[str, ...]  # element roles the step reads
    outputs: dict[str, Any]  # element role -> its new value (param and changed state tensors)
    scalars: dict[str, tuple[str, str, int | None]]  # symbol -> (group|state, key, tuple index)
    updates: dict[str, Any]  # scalar symbol -> its new value (scalar state the host updates)
    fixed: dict[str, Any]  # group key -> value the program was traced with (must be equal)
    guards: tuple[tuple[Any, bool], ...]  # (relation over scalar symbols, its value)
    state_keys: tuple[str, ...] = ()  # every state key (tensor and scalar) after a step
    #: per-tensor reductions the outputs use as ``r_<k>``: (kind, per-element formula); kind
    #: "norm2" is sqrt(sum of squares), "sum" a plain sum, over all elements of the tensor
    reductions: tuple[tuple[str, Any], ...] = ()


def element_symbol(role: str) -> sympy.Symbol:
    return sympy.Symbol("e_" + _name(role))


class _ReadDict(dict):  # type: ignore[type-arg]
    """A param group that remembers which keys ``step`` read."""

    def __init__(self, group: dict[str, Any]) -> None:
        super().__init__(group)
        self.reads: set[str] = set()

    def __getitem__(self, key: Any) -> Any:
        self.reads.add(key)
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self.reads.add(key)
        return super().get(key, default)


def _retag(opt: Any, params: list[SymTensor], trace: int, first: bool,
           scalars: dict[str, tuple[str, str, int | None]]) -> None:
    """Fresh element symbols in params and state; tagged host scalars (see module docstring)."""
    starts: dict[str, int] = {}

    def host(value: Any, sym: str, where: str, key: str, index: int | None) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value
        value = _plain(value)
        if where == "group" and (isinstance(value, int) or value == 0):
            return value  # ints and zeros in a group are structure (fixed), not data
        if first:  # counters (ints, or integral floats such as torch.optim's step) stay integral
            start = starts.setdefault(key, _STARTS[trace][len(starts) % len(_STARTS[trace])])
            value = (start if isinstance(value, int) else
                     float(start) if where == "state" and float(value).is_integer()
                     else value * _SCALE[trace])
        if value == 0:
            return value
        scalars[sym] = (where, key, index)
        _symbol_values[sympy.Symbol(sym)] = float(value)
        return tag(value, sympy.Symbol(sym))

    for group in opt.param_groups:
        for key, v in list(group.items()):
            if key == "params":
                continue
            sym = "h_" + _name(key)
            if isinstance(v, (tuple, list)):
                group[key] = type(v)(host(x, f"{sym}_{k}", "group", key, k)
                                     for k, x in enumerate(v))
            else:
                group[key] = host(v, sym, "group", key, None)
    for i, p in enumerate(params):
        p.write(np.array([sympy.Symbol(f"param#{i}.{j}") for j in range(NUMEL)], dtype=object))
        if i < N_PARAMS - 1:
            p.grad = SymTensor.of([sympy.Symbol(f"grad#{i}.{j}") for j in range(NUMEL)])
        state = opt.state.get(p, {})
        for key, v in list(state.items()):
            if isinstance(v, SymTensor) and v.dim() > 0:
                if tuple(v.shape) != tuple(p.shape):
                    raise KernelTraceError(f"state {key!r} is not parameter-shaped ({v.shape})")
                v.write(np.array([sympy.Symbol(f"{_name(key)}#{i}.{j}") for j in range(NUMEL)],
                                 dtype=object))
            elif isinstance(v, torch.Tensor) and v.dim() == 0 and v.dtype.is_floating_point:
                # a 0-d counter (torch.optim's step): its value becomes a tagged host scalar
                t = host(_zero_d_value(v), "st_" + _name(key), "state", key, None)
                state[key] = SymTensor.fresh(torch.empty((), dtype=v.dtype, device="meta"),
                                             _expr(t))
            elif isinstance(v, torch.Tensor):
                raise KernelTraceError(f"state {key!r} is a tensor of another shape "
                                       f"({tuple(v.shape)})")
            else:
                state[key] = host(v, "st_" + _name(key), "state", key, None)


#: uninterpreted aten ops that reduce a whole tensor -> how the kernel combines element values
REDUCTIONS = {"aten.linalg_vector_norm.default": "norm2", "aten.sum.default": "sum"}


def _own_elements(e: Any, i: int, j: int, roles: dict[str, str], role: str) -> Any:
    """``e`` with tensor ``i``'s element-``j`` symbols renamed ``e_<role>``; refused if it reads
    another element."""
    mine = {}
    for s in e.free_symbols:
        name, _, pos = s.name.partition("#")
        if not pos:
            continue  # a host scalar
        if pos != f"{i}.{j}":
            raise KernelTraceError(f"{role}: element {j} of tensor {i} reads element "
                                   f"{pos} of `{name}`; not a per-element step")
        mine[s] = element_symbol(roles.get(name, name))
    return e.xreplace(mine)


def _reduction(f: Any, i: int, roles: dict[str, str], role: str) -> tuple[str, Any] | None:
    """(kind, per-element formula) when ``f`` reduces one formula over every element of tensor
    ``i`` (a norm or a sum of the tensor being updated), else None."""
    kind = REDUCTIONS.get(str(f.func))
    if kind is None or len(f.args) != NUMEL:
        return None
    try:
        forms = [_own_elements(a, i, j, roles, role) for j, a in enumerate(f.args)]
    except KernelTraceError:
        return None
    if any(x != forms[0] for x in forms) or forms[0].atoms(AppliedUndef):
        return None
    return kind, forms[0]


def _zero_d_value(v: torch.Tensor) -> Any:
    """The number a 0-d state tensor holds (a SymTensor after the first traced step)."""
    if isinstance(v, SymTensor):
        e = v.exprs().ravel()[0]
        return tag(float(e.xreplace(_symbol_values)), e)
    return v.item()


def _per_element(values: dict[tuple[str, int], np.ndarray], roles: dict[str, str],
                 reductions: list[tuple[str, Any]]) -> dict[str, Any]:
    """Element (0, 0) of every output, after checking every element follows the same formula.

    Per-tensor reductions become symbols ``r_<k>`` (``reductions[k]``: kind, formula)."""
    out: dict[str, Any] = {}
    for (role, i), exprs in sorted(values.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        for j, e in enumerate(exprs.ravel().tolist()):
            e = sympy.sympify(e)
            found = {f: _reduction(f, i, roles, role)
                     for f in sorted(e.atoms(AppliedUndef), key=str)}
            for f, red in found.items():
                if red is not None:
                    if red not in reductions:
                        reductions.append(red)
                    e = e.xreplace({f: sympy.Symbol(f"r_{reductions.index(red)}")})
            if e.atoms(AppliedUndef):
                fn = sorted(str(f.func) for f in e.atoms(AppliedUndef))[0]
                raise KernelTraceError(f"{role}: `{fn}` has no per-element translation "
                                       "(a reduction, a matrix op or random numbers)")
            formula = _own_elements(e, i, j, roles, role)
            if role not in out:
                out[role] = formula
            elif out[role] != formula:
                raise KernelTraceError(f"{role}: tensors or elements follow different formulas")
    return out


def _run_step(opt: Any, params: list[SymTensor], trace: int, first: bool,
              scalars: dict[str, tuple[str, str, int | None]]) -> ElementProgram:
    registry: dict[float, Any] = {}
    with _tracing(registry):
        _retag(opt, params, trace, first, scalars)
        for g in opt.param_groups:
            g.reads = set()
        roles = {"param": "param", "grad": "grad"}
        for p in params:
            roles.update({_name(k): str(k) for k in opt.state.get(p, {})})
        before = {k: v.exprs().ravel()[0] if _is_counter(v) else _expr(v)
                  for k, v in opt.state.get(params[0], {}).items()}
        idle_before = {k: _scalar_expr(v) for k, v in opt.state.get(params[-1], {}).items()}
        try:
            opt.step()
        except SymbolicExecutionError as e:
            raise KernelTraceError(str(e)) from e
        guards = tuple(dict.fromkeys(_guards))
    if not _untouched(opt, params[-1], N_PARAMS - 1, idle_before):
        raise KernelTraceError("a parameter without a gradient was changed, or its state")
    values: dict[tuple[str, int], np.ndarray] = {}
    for i, p in enumerate(params[:-1]):
        values[("param", i)] = p.exprs()
        for key, v in opt.state[p].items():
            if isinstance(v, SymTensor) and v.dim() > 0:
                values[(str(key), i)] = v.exprs()
    reductions: list[tuple[str, Any]] = []
    outputs = _per_element(values, roles, reductions)
    changed = {r: e for r, e in outputs.items() if e != element_symbol(r)}
    inputs = sorted({roles.get(s.name[2:], s.name[2:])
                     for e in [*changed.values(), *(f for _, f in reductions)]
                     for s in e.free_symbols if s.name.startswith("e_")})
    updates = _scalar_updates(opt, params, before)
    fixed = {k: v for g in opt.param_groups for k, v in g.items()
             if k in g.reads and k != "params" and not _has_tag(v)}
    return ElementProgram(tuple(inputs), changed, dict(scalars), updates, fixed, guards,
                          tuple(str(k) for k in opt.state[params[0]]), tuple(reductions))


def _untouched(opt: Any, p: SymTensor, i: int, scalars_before: dict[Any, Any]) -> bool:
    """Param ``i`` (no gradient) and its state, if any, hold what ``_retag`` put there."""
    def fresh(t: SymTensor, name: str) -> bool:
        return [str(e) for e in t.exprs().ravel()] == [f"{name}#{i}.{j}" for j in range(NUMEL)]

    state = opt.state.get(p, {})
    return fresh(p, "param") and state.keys() <= scalars_before.keys() and all(
        fresh(v, _name(k)) if isinstance(v, SymTensor) and v.dim() > 0
        else _scalar_expr(v) == scalars_before[k] for k, v in state.items())


def _is_counter(v: Any) -> bool:
    return isinstance(v, SymTensor) and v.dim() == 0


def _scalar_expr(v: Any) -> Any:
    if _is_counter(v):
        return v.exprs().ravel()[0]
    return _expr(v) if isinstance(v, (int, float)) else None


def _has_tag(v: Any) -> bool:
    if isinstance(v, (tuple, list)):
        return any(_has_tag(x) for x in v)
    return isinstance(v, (TaggedFloat, TaggedInt))


def _scalar_updates(opt: Any, params: list[SymTensor], before: dict[Any, Any]) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    for key, v in opt.state[params[0]].items():
        if isinstance(v, torch.Tensor) and not _is_counter(v):
            continue
        sym = "st_" + _name(key)
        new = _scalar_expr(v)
        if new is None:
            raise KernelTraceError(f"state {key!r} holds a {type(v).__name__}")
        if any(_scalar_expr(opt.state[p].get(key)) != new for p in params[:-1]):
            raise KernelTraceError(f"state {key!r} differs between parameters after a step")
        if key not in before or new != before[key]:
            updates[sym] = new
    for g in opt.param_groups:
        for key, v in g.items():
            if _has_tag(v) and not isinstance(v, (tuple, list)):
                if sympy.Symbol("h_" + _name(key)) != v.expr:
                    updates["h_" + _name(key)] = v.expr
    return updates


def _same(a: ElementProgram, b: ElementProgram) -> str | None:
    for name in ("inputs", "outputs", "updates", "fixed", "guards", "state_keys", "reductions"):
        if getattr(a, name) != getattr(b, name):
            return name
    return None


def trace_program(cls: type, config: dict[str, Any]) -> ElementProgram:
    """The per-element program of ``cls(params, **config).step()`` (see module docstring)."""
    programs = []
    for trace in (0, 1):
        params = [SymTensor.of([sympy.Symbol(f"param#{i}.{j}") for j in range(NUMEL)])
                  for i in range(N_PARAMS)]
        try:
            opt = cls(params, **config)
            opt.param_groups = [_ReadDict(g) for g in opt.param_groups]
            for i, p in enumerate(params[:-1]):
                p.grad = SymTensor.of([sympy.Symbol(f"grad#{i}.{j}") for j in range(NUMEL)])
            with _tracing({}):
                opt.step()  # step 1: lazy state initialisation, not traced
        except (SymbolicExecutionError, TypeError, ValueError, RuntimeError) as e:
            raise KernelTraceError(f"step() cannot run symbolically: {e}") from e
        scalars: dict[str, tuple[str, str, int | None]] = {}
        second = _run_step(opt, params, trace, True, scalars)
        third = _run_step(opt, params, trace, False, scalars)
        if (diff := _same(second, third)) is not None:
            raise KernelTraceError(f"steps 2 and 3 differ in their {diff}: step() depends on "
                                   "values outside param_groups and opt.state")
        programs.append(second)
    if (diff := _same(*programs)) is not None:
        raise KernelTraceError(f"traces with other hyperparameter values differ in their {diff}: "
                               "a host scalar lost track of where it came from")
    return programs[0]
