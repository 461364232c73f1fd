"""An independent oracle for R-variants: run an original optimizer class and its R-variant in
lockstep on identical inputs under a stress matrix and report the first observable difference.

Deliberately shares no code with ``gsr_rewrite.proof.check``.  What is compared after every step:
params, every state value (tensor keys mapped to param positions), every param_groups option,
every attribute the optimizer keeps on ``self`` (``vars(opt)`` minus torch's bookkeeping),
mutable module-level globals of the two modules, and the value ``step`` returns.  ``p.grad`` is
never compared (its contents after ``step()`` are undefined by the contract).

Tensors compare bitwise (same dtype, shape and bits; NaN equals NaN whatever its payload) or,
for ``tolerance`` classes, within rtol 1e-5 / atol 1e-6 (widened to the dtype's resolution for
16-bit floats).  When the original raises in a scenario, the R-variant must raise the same
exception type at the same step; the scenario then counts as not applicable.

Scenarios (each on foreach=False and foreach=True when the constructor takes ``foreach``), 8
steps each, two param groups (the second with lr halved and another weight decay):
  base                 ranks 1-4, a 0-size, a 1-element, a transposed and a strided-slice param,
                       a contiguous param with a non-contiguous grad, params of several 64-element
                       strips; None grads on some steps; an all-zero grad on step 5
  duplicate-param      one param listed twice in the first group
  overlapping-grads    grads are overlapping views of one flat buffer
  flat-bucket-grads    params and grads are non-overlapping views of flat buffers (FSDP/DDP
                       style); a stride-0 (expanded) grad on step 3, an inf on the last step
  autograd-accumulate  grads from two backward passes accumulated after
                       ``zero_grad(set_to_none=False)``; odd steps pass a closure doing the same
  tensor-lr            ``lr`` a 0-d tensor in both groups (n/a if the original rejects it)
  bf16                 the base params in bfloat16
Before each step the global RNG is seeded alike on both sides.  Mutable class-level attributes
of the optimizer class are compared too.

Case modules may define (all optional):
  ``CLASS``         the class under test when the module defines several optimizer classes
  ``CTOR``          extra constructor keyword arguments (dict)
  ``build``         ``build(cls, param_groups, **kwargs) -> optimizer`` (wrapper optimizers)
  ``NEEDS_CLOSURE`` pass a closure to every ``step`` call (SAM-style optimizers)
  ``COMPLEX``       add complex64 params to the ``base`` scenario
  ``GROUP2``        option overrides of the second param group (default: lr halved and
                    a different weight decay when the optimizer has one)
"""

from __future__ import annotations

import collections
import inspect
import math
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer

STEPS = 8

# torch.optim.Optimizer's own bookkeeping on self: not optimizer results.
BOOKKEEPING = {
    "_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks",
    "_zero_grad_profile_name", "_warned_capturable_if_run_uncaptured", "_opt_called",
    "_patched_step", "_step_count",
}
# Attributes the rewriter may add to its own variant (only tolerated on the R side).
TOOL_PREFIX = "_gsr"

_INT_OF = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
           torch.bfloat16: torch.int16}


class Differs(Exception):
    """The first observable difference between the original and the R-variant."""


@dataclass
class Verdict:
    ok: bool
    first: str = ""                                   # first difference (when not ok)
    failed: list[str] = field(default_factory=list)   # scenarios with a difference
    ran: list[str] = field(default_factory=list)      # scenarios compared step by step
    not_applicable: list[str] = field(default_factory=list)  # original raised (R raised alike)
    steps_compared: int = 0

    def summary(self) -> str:
        head = "equal" if self.ok else f"DIFFERS: {self.first}"
        return (f"{head} | compared {self.steps_compared} steps in {len(self.ran)} scenarios"
                + (f"; failed: {', '.join(self.failed)}" if self.failed else "")
                + (f"; n/a: {', '.join(self.not_applicable)}" if self.not_applicable else ""))


# --------------------------------------------------------------------------- comparison


@dataclass
class _Ctx:
    pos_a: dict[int, int]   # id(param) -> position, original side
    pos_b: dict[int, int]
    tol: bool
    seen: set[tuple[int, int]] = field(default_factory=set)


def _tensor_diff(a: torch.Tensor, b: torch.Tensor, tol: bool) -> str | None:
    if a.dtype != b.dtype:
        return f"dtype {a.dtype} vs {b.dtype}"
    if a.shape != b.shape:
        return f"shape {tuple(a.shape)} vs {tuple(b.shape)}"
    if a.device != b.device:
        return f"device {a.device} vs {b.device}"
    a = a.detach()
    b = b.detach()
    if a.is_complex():
        a, b = torch.view_as_real(a.resolve_conj()), torch.view_as_real(b.resolve_conj())
    if a.numel() == 0:
        return None
    if not a.dtype.is_floating_point:
        if torch.equal(a, b):
            return None
        idx = (a != b).nonzero()[0].tolist()
        return f"at {idx}: {a[tuple(idx)].item()} vs {b[tuple(idx)].item()}"
    na, nb = torch.isnan(a), torch.isnan(b)
    if tol:
        eps = torch.finfo(a.dtype).eps
        rtol, atol = max(1e-5, 4 * eps), max(1e-6, 4 * eps if a.element_size() < 4 else 0.0)
        close = torch.isclose(a.double(), b.double(), rtol=rtol, atol=atol, equal_nan=True)
        bad = ~close
    else:
        ia = a.contiguous().view(_INT_OF[a.dtype])
        ib = b.contiguous().view(_INT_OF[b.dtype])
        bad = (ia != ib) & ~(na & nb)
    if not bool(bad.any()):
        return None
    idx = tuple(bad.nonzero()[0].tolist())
    return (f"{int(bad.sum())} of {a.numel()} elements differ, first at {list(idx)}: "
            f"{a[idx].item()!r} vs {b[idx].item()!r}")


def _key(k: Any, pos: dict[int, int]) -> Any:
    if isinstance(k, torch.Tensor):
        if id(k) in pos:
            return ("param", pos[id(k)])
        return ("tensor-key", tuple(k.shape))
    return k


def _cmp(a: Any, b: Any, path: str, ctx: _Ctx) -> None:
    """Raise Differs at the first difference between a (original side) and b (R side)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            raise Differs(f"{path}: {type(a).__name__} vs {type(b).__name__}")
        pa, pb = ctx.pos_a.get(id(a)), ctx.pos_b.get(id(b))
        if pa is not None or pb is not None:
            if pa != pb:
                raise Differs(f"{path}: refers to param {pa} vs param {pb}")
            return  # the param itself: its values are compared once, as a param
        d = _tensor_diff(a, b, ctx.tol)
        if d:
            raise Differs(f"{path}: {d}")
        return
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return
        if a == b or (ctx.tol and math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)):
            return
        raise Differs(f"{path}: {a!r} vs {b!r}")
    if isinstance(a, (bool, int, str, bytes, type(None), complex)) or \
            isinstance(b, (bool, int, str, bytes, type(None), complex)):
        if type(a) is not type(b) and not (isinstance(a, (int, float)) and
                                           isinstance(b, (int, float))):
            raise Differs(f"{path}: {type(a).__name__} {a!r} vs {type(b).__name__} {b!r}")
        if a != b:
            raise Differs(f"{path}: {a!r} vs {b!r}")
        return
    if type(a).__name__ != type(b).__name__ and not (isinstance(a, Optimizer) and
                                                      isinstance(b, Optimizer)):
        raise Differs(f"{path}: type {type(a).__name__} vs {type(b).__name__}")
    pair = (id(a), id(b))
    if pair in ctx.seen:
        return
    ctx.seen.add(pair)
    if isinstance(a, Optimizer):
        _cmp_optimizer(a, b, path, ctx)
        return
    if isinstance(a, dict):
        ka = {_key(k, ctx.pos_a): k for k in a}
        kb = {_key(k, ctx.pos_b): k for k in b}
        if set(ka) != set(kb):
            raise Differs(f"{path}: keys {sorted(map(repr, set(ka) ^ set(kb)))} on one side only")
        for k in ka:
            _cmp(a[ka[k]], b[kb[k]], f"{path}[{k!r}]", ctx)
        if isinstance(a, collections.deque) and a.maxlen != b.maxlen:
            raise Differs(f"{path}: deque maxlen {a.maxlen} vs {b.maxlen}")
        return
    if isinstance(a, (list, tuple, collections.deque)):
        if len(a) != len(b):
            raise Differs(f"{path}: length {len(a)} vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _cmp(x, y, f"{path}[{i}]", ctx)
        return
    if isinstance(a, (set, frozenset)):
        if {_key(k, ctx.pos_a) for k in a} != {_key(k, ctx.pos_b) for k in b}:
            raise Differs(f"{path}: sets differ")
        return
    if isinstance(a, torch.Generator):
        if not torch.equal(a.get_state(), b.get_state()):
            raise Differs(f"{path}: generator states differ")
        return
    if isinstance(a, (types.FunctionType, types.MethodType, types.BuiltinFunctionType,
                      types.ModuleType, type, torch.dtype, torch.device)):
        return  # code, not results
    if hasattr(a, "__dict__") and hasattr(b, "__dict__"):
        _cmp(vars(a), vars(b), f"{path}.__dict__", ctx)
        return
    try:
        same = a == b
        if isinstance(same, bool) and not same:
            raise Differs(f"{path}: {a!r} vs {b!r}")
    except Differs:
        raise
    except Exception:  # incomparable objects: compare their text
        if repr(a) != repr(b):
            raise Differs(f"{path}: {a!r} vs {b!r}") from None


def _cmp_optimizer(a: Optimizer, b: Optimizer, path: str, ctx: _Ctx) -> None:
    sa = {_key(k, ctx.pos_a): v for k, v in a.state.items() if not (isinstance(v, dict) and not v)}
    sb = {_key(k, ctx.pos_b): v for k, v in b.state.items() if not (isinstance(v, dict) and not v)}
    if set(sa) != set(sb):
        raise Differs(f"{path}.state: entries for {sorted(map(repr, set(sa) ^ set(sb)))} "
                      "on one side only")
    for k in sorted(sa, key=repr):
        _cmp(sa[k], sb[k], f"{path}.state[{k!r}]", ctx)
    if len(a.param_groups) != len(b.param_groups):
        raise Differs(f"{path}.param_groups: {len(a.param_groups)} vs {len(b.param_groups)}")
    for i, (ga, gb) in enumerate(zip(a.param_groups, b.param_groups, strict=True)):
        if set(ga) != set(gb):
            raise Differs(f"{path}.param_groups[{i}]: keys {sorted(set(ga) ^ set(gb))}")
        for k in ga:
            if k == "params":
                la = [ctx.pos_a.get(id(p), "?") for p in ga[k]]
                lb = [ctx.pos_b.get(id(p), "?") for p in gb[k]]
                if la != lb:
                    raise Differs(f"{path}.param_groups[{i}]['params']: {la} vs {lb}")
            else:
                _cmp(ga[k], gb[k], f"{path}.param_groups[{i}][{k!r}]", ctx)
    va = {k: v for k, v in vars(a).items()
          if k not in BOOKKEEPING and k not in ("state", "param_groups")}
    vb = {k: v for k, v in vars(b).items()
          if k not in BOOKKEEPING and k not in ("state", "param_groups")}
    missing = set(va) - set(vb)
    extra = {k for k in set(vb) - set(va) if not k.startswith(TOOL_PREFIX)}
    if missing or extra:
        raise Differs(f"{path}: attributes {sorted(missing | extra)} on one side only")
    for k in sorted(va):
        _cmp(va[k], vb[k], f"{path}.{k}", ctx)


_PLAIN = (int, float, bool, str, list, dict, set, tuple, collections.deque, torch.Tensor)


def _module_globals(mod: types.ModuleType | None) -> dict[str, Any]:
    if mod is None:
        return {}
    return {k: v for k, v in vars(mod).items()
            if not k.startswith("__") and isinstance(v, _PLAIN) and k.isidentifier()}


def compare(opt_a: Optimizer, opt_b: Optimizer, params_a: list[torch.Tensor],
            params_b: list[torch.Tensor], tol: bool, mod_a: types.ModuleType | None = None,
            mod_b: types.ModuleType | None = None) -> None:
    """Raise Differs at the first difference between the two optimizers' observable results."""
    pos_a = {id(p): i for i, p in enumerate(params_a)}
    pos_b = {id(p): i for i, p in enumerate(params_b)}
    for i, (x, y) in enumerate(zip(params_a, params_b, strict=True)):
        d = _tensor_diff(x, y, tol)
        if d:
            raise Differs(f"param {i} {tuple(x.shape)}: {d}")
    ctx = _Ctx(pos_a, pos_b, tol)
    _cmp(opt_a, opt_b, "opt", ctx)
    # mutable class-level attributes (shared by every instance): compared like globals
    for k in sorted(dir(type(opt_a))):
        if k.startswith("__") or k in BOOKKEEPING:
            continue
        va = inspect.getattr_static(type(opt_a), k, None)
        if isinstance(va, (list, dict, set, collections.deque)) and k not in vars(opt_a):
            _cmp(va, inspect.getattr_static(type(opt_b), k, None), f"class attribute {k}", ctx)
    ga, gb = _module_globals(mod_a), _module_globals(mod_b)
    for k in sorted(set(ga) & set(gb)):
        if k in ("EXPECT", "CTOR", "NEEDS_CLOSURE", "COMPLEX", "GROUP2", "CLASS"):
            continue
        _cmp(ga[k], gb[k], f"module global {k}", ctx)


# --------------------------------------------------------------------------- problems


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@dataclass
class Problem:
    """One side's params, grouped, and how its grads are produced each step."""

    params: list[torch.Tensor]          # every distinct param, in position order
    groups: list[list[torch.Tensor]]    # params of each group (may repeat a param)
    set_grads: Callable[[int, bool], None]  # (step, inside_closure) -> assigns p.grad
    loss: Callable[[], torch.Tensor] | None = None  # autograd problems: differentiable loss


def _randn(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=g)


def _base_problem(dtype: torch.dtype, complex_params: bool) -> Problem:
    g = _gen(1234)
    p_rank = [_randn((7,), g), _randn((3, 5), g), _randn((2, 3, 4), g), _randn((2, 2, 3, 2), g),
              _randn((9, 15), g)]        # several 64-element strips, a ragged tail
    p_odd = [
        _randn((0,), g),                 # 0-size
        _randn((1,), g),                 # 1 element
        _randn((6, 4), g).t(),           # non-contiguous (transposed)
        _randn((5, 3), g),               # contiguous param, its grad is made non-contiguous
        _randn((200,), g),
    ]
    if dtype != torch.float32:
        p_rank = [p.to(dtype) for p in p_rank]
        p_odd = [p.to(dtype) for p in p_odd]
    else:
        p_odd.append(_randn((12,), g)[::3])  # strided slice: neither contiguous nor dense
    if complex_params:
        p_rank += [torch.randn((3, 2), generator=g, dtype=torch.complex64),
                   torch.randn((4,), generator=g, dtype=torch.complex64)]
    params = p_rank + p_odd

    def set_grads(step: int, closure: bool) -> None:
        gg = _gen(100 + step * 7 + (3 if closure else 0))
        for i, p in enumerate(params):
            if (i * 3 + step) % 7 == 0 and step > 0:
                p.grad = None  # no grad for this param on this step
                continue
            v = torch.randn(p.shape, generator=gg, dtype=p.dtype) * 0.5
            if closure:
                v = v + 0.25 * p.detach()
            if step == 5 and i == 1:
                v = torch.zeros_like(v)  # an all-zero gradient
            if p.dim() == 2 and p.shape == (5, 3):  # non-contiguous gradient of a contiguous param
                grad = torch.empty(p.shape[::-1], dtype=p.dtype).t()
            else:
                grad = torch.empty_like(p)
            p.grad = grad.copy_(v)

    return Problem(params, [p_rank, p_odd], set_grads)


def _dup_problem() -> Problem:
    g = _gen(77)
    a, b, c, d = _randn((4, 3), g), _randn((5,), g), _randn((2, 2), g), _randn((3,), g)
    params = [a, b, c, d]

    def set_grads(step: int, closure: bool) -> None:
        gg = _gen(300 + step * 5 + (1 if closure else 0))
        for p in params:
            v = torch.randn(p.shape, generator=gg) * 0.5
            p.grad = v + 0.25 * p.detach() if closure else v

    return Problem(params, [[a, b, a, c], [d]], set_grads)


def _flat_problem(overlap: bool, finite: bool = False) -> Problem:
    g = _gen(99)
    shapes = [(12,), (12,), (3, 4), (3,)] if overlap else [(5,), (2, 3), (4, 2), (3,)]
    sizes = [math.prod(s) for s in shapes]
    if overlap:
        params = [_randn(s, g) for s in shapes]
    else:  # the params too are views of one flat buffer (FSDP/apex flat params)
        pflat = _randn((sum(sizes),), g)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        params = [pflat[o:o + n].view(s) for o, n, s in zip(starts, sizes, shapes, strict=True)]
    if overlap:
        offsets = [0, 8, 16, 28]       # grad 1 overlaps grad 0 and grad 2 by 4 elements each
        total = 31
    else:
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        total = sum(sizes)

    def set_grads(step: int, closure: bool) -> None:
        gg = _gen(500 + step * 3 + (1 if closure else 0))
        flat = torch.randn(total, generator=gg) * 0.5   # one bucket, like DDP or apex
        if not overlap and not finite and step == STEPS - 1:
            flat[1] = float("inf")     # a non-finite gradient on the last step
        for p, o, n in zip(params, offsets, sizes, strict=True):
            p.grad = flat[o:o + n].view(p.shape)
        if not overlap and step == 3:  # a stride-0 (expanded) gradient
            params[3].grad = torch.full((1,), 0.3).expand(params[3].shape)

    return Problem(params, [params[:3], params[3:]], set_grads)


def _autograd_problem() -> Problem:
    g = _gen(2024)
    w1 = (_randn((8, 12), g) * 0.3).requires_grad_()
    b1 = _randn((12,), g).requires_grad_()
    w2 = (_randn((2, 12), g) * 0.3).t().requires_grad_()   # non-contiguous leaf
    s = _randn((1,), g).requires_grad_()
    w3 = _randn((2, 2), g).requires_grad_()
    params = [w1, b1, w2, s, w3]
    xs = [_randn((5, 8), g), _randn((5, 8), g)]

    def loss() -> torch.Tensor:
        total = torch.zeros(())
        for x in xs:  # two micro-batches: grads accumulate
            h = torch.tanh(x @ w1 + b1)
            out = (h @ w2) * s
            total = total + (out ** 2).mean() + 0.1 * (w3 ** 2).sum() + (w3 @ w3).sum() * 0.01
        return total

    def set_grads(step: int, closure: bool) -> None:  # unused: grads come from backward
        raise AssertionError

    return Problem(params, [[w1, b1, w2, s], [w3]], set_grads, loss)


# --------------------------------------------------------------------------- running


@dataclass
class Scenario:
    name: str
    make: Callable[[], Problem]
    lr_tensor: bool = False


def _scenarios(complex_params: bool, tolerance: bool) -> list[Scenario]:
    """A class rewritten with a reformulation (tolerance) is equal in real arithmetic: on finite
    gradients (README, "The contract"); bitwise classes also get an inf gradient."""
    return [
        Scenario("base", lambda: _base_problem(torch.float32, complex_params)),
        Scenario("duplicate-param", _dup_problem),
        Scenario("overlapping-grads", lambda: _flat_problem(True)),
        Scenario("flat-bucket-grads", lambda: _flat_problem(False, finite=tolerance)),
        Scenario("autograd-accumulate", _autograd_problem),
        Scenario("tensor-lr", lambda: _base_problem(torch.float32, False), lr_tensor=True),
        Scenario("bf16", lambda: _base_problem(torch.bfloat16, False)),
    ]


def _ctor_defaults(cls: type) -> dict[str, Any]:
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return {}
    return {k: p.default for k, p in sig.parameters.items() if p.default is not p.empty}


def _groups(problem: Problem, cls: type, ctor: dict[str, Any], group2: dict[str, Any] | None,
            lr_tensor: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    kw = dict(ctor)
    defaults = {**_ctor_defaults(cls), **kw}
    g1: dict[str, Any] = {"params": problem.groups[0]}
    g2: dict[str, Any] = {"params": problem.groups[1]}
    if group2 is not None:
        g2.update(group2)
    else:
        lr = defaults.get("lr")
        if isinstance(lr, (int, float)) and not isinstance(lr, bool):
            g2["lr"] = lr / 2
        wd = defaults.get("weight_decay")
        if isinstance(wd, (int, float)) and not isinstance(wd, bool):
            g2["weight_decay"] = 0.05 if wd == 0 else wd * 2
    if lr_tensor:
        lr = defaults.get("lr")
        if not isinstance(lr, (int, float)) or isinstance(lr, bool):
            raise _NotApplicable("no float lr to make a tensor of")
        kw["lr"] = torch.tensor(float(lr))
        g2["lr"] = torch.tensor(float(g2.get("lr", lr)))
    return [g1, g2], kw


class _NotApplicable(Exception):
    pass


def _accepts_closure(opt: Optimizer) -> bool:
    try:
        return len(inspect.signature(opt.step).parameters) >= 1
    except (TypeError, ValueError):
        return True


class _Side:
    def __init__(self, cls: type, problem: Problem, groups: list[dict[str, Any]],
                 kw: dict[str, Any], build: Callable[..., Optimizer] | None) -> None:
        self.problem = problem
        self.opt = build(cls, groups, **kw) if build else cls(groups, **kw)

    def closure(self, step: int) -> Callable[[], Any]:
        pr = self.problem

        def closure() -> torch.Tensor:
            if pr.loss is not None:
                self.opt.zero_grad(set_to_none=False)
                with torch.enable_grad():
                    loss = pr.loss()
                    loss.backward()
                return loss.detach()
            pr.set_grads(step, True)
            return sum((p.detach().float().abs().sum() for p in pr.params), torch.zeros(()))

        return closure

    def prepare(self, step: int) -> None:
        pr = self.problem
        if pr.loss is not None:
            self.opt.zero_grad(set_to_none=False)  # accumulate into the kept grad buffers
            with torch.enable_grad():
                pr.loss().backward()
        else:
            pr.set_grads(step, False)

    def step(self, step: int, use_closure: bool) -> Any:
        torch.manual_seed(10_000 + step)  # optimizers drawing from the global RNG see the same
        if use_closure:
            return self.opt.step(self.closure(step))
        return self.opt.step()


def _outcome(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001 - any exception is an observable outcome
        return None, e


def _run_scenario(orig: type, rcls: type, sc: Scenario, kw_extra: dict[str, Any],
                  case: types.ModuleType | None, tol: bool, steps: int,
                  mod_a: types.ModuleType | None, mod_b: types.ModuleType | None
                  ) -> tuple[str, int, str]:
    """-> (status 'ok' | 'n/a' | 'differs', steps compared, detail)."""
    ctor = {**getattr(case, "CTOR", {}), **kw_extra}
    build = getattr(case, "build", None)
    needs_closure = getattr(case, "NEEDS_CLOSURE", False)
    group2 = getattr(case, "GROUP2", None)
    torch.manual_seed(0)
    pa = sc.make()
    pb = sc.make()
    try:
        ga, kwa = _groups(pa, orig, ctor, group2, sc.lr_tensor)
        gb, kwb = _groups(pb, orig, ctor, group2, sc.lr_tensor)
    except _NotApplicable as e:
        return "n/a", 0, str(e)
    torch.manual_seed(1)
    a, ea = _outcome(lambda: _Side(orig, pa, ga, kwa, build))
    torch.manual_seed(1)
    b, eb = _outcome(lambda: _Side(rcls, pb, gb, kwb, build))
    if ea or eb:
        if ea and eb and type(ea) is type(eb):
            return "n/a", 0, f"constructor raised {type(ea).__name__}: {ea}"
        return "differs", 0, (f"constructor: original {type(ea).__name__ if ea else 'ok'} "
                              f"({ea}), R {type(eb).__name__ if eb else 'ok'} ({eb})")
    compared = 0
    for step in range(steps):
        use_closure = needs_closure or (pa.loss is not None and step % 2 == 1
                                        and _accepts_closure(a.opt))
        # grads first (SAM-style steps read them before calling the closure); the two sides
        # share nothing, so each prepares and steps in turn
        ra, ea = _outcome(lambda s=step, c=use_closure: (a.prepare(s), a.step(s, c))[1])
        rb, eb = _outcome(lambda s=step, c=use_closure: (b.prepare(s), b.step(s, c))[1])
        if ea or eb:
            if ea and eb and type(ea) is type(eb):
                return "n/a", compared, f"step {step}: both raised {type(ea).__name__}: {ea}"
            return "differs", compared, (
                f"step {step}: original {type(ea).__name__ + ': ' + str(ea) if ea else 'ok'}, "
                f"R {type(eb).__name__ + ': ' + str(eb) if eb else 'ok'}")
        try:
            compare(a.opt, b.opt, pa.params, pb.params, tol, mod_a, mod_b)
            _cmp(ra, rb, "step() return value", _Ctx({}, {}, tol))
        except Differs as d:
            return "differs", compared, f"step {step}: {d}"
        compared += 1
    return "ok", compared, ""


def run_pair(orig: type, rcls: type, *, tolerance: bool = False,
             case: types.ModuleType | None = None, steps: int = STEPS,
             mod_a: types.ModuleType | None = None, mod_b: types.ModuleType | None = None,
             scenarios: list[str] | None = None) -> Verdict:
    """Run `orig` and `rcls` in lockstep over the stress matrix; `case` supplies the optional
    hooks (CTOR, build, ...); `mod_a`/`mod_b` the modules whose globals are compared too."""
    verdict = Verdict(ok=True)
    has_foreach = "foreach" in _ctor_defaults(orig) and "foreach" not in getattr(case, "CTOR", {})
    paths = [{"foreach": False}, {"foreach": True}] if has_foreach else [{}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for sc in _scenarios(bool(getattr(case, "COMPLEX", False)), tolerance):
            if scenarios is not None and sc.name not in scenarios:
                continue
            for kw in paths:
                name = sc.name + ("" if not kw else f"/foreach={kw['foreach']}")
                status, n, detail = _run_scenario(orig, rcls, sc, kw, case, tolerance, steps,
                                                  mod_a, mod_b)
                verdict.steps_compared += n
                if status == "n/a":
                    verdict.not_applicable.append(f"{name} ({detail[:80]})")
                    continue
                verdict.ran.append(name)
                if status == "differs":
                    verdict.failed.append(name)
                    if verdict.ok:
                        verdict.ok, verdict.first = False, f"[{name}] {detail}"
    if verdict.ok and verdict.steps_compared == 0:
        verdict.ok, verdict.first = False, "no scenario could run a single step (vacuous)"
    return verdict
