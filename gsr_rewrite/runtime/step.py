"""The R step's wrapper (`r_step`): when the original step runs instead, and the debug switch
that poisons reused gradients."""

from __future__ import annotations

import functools
import inspect
import os
import types
from collections.abc import Callable, Sequence
from typing import Any

import torch

from gsr_rewrite.runtime import layout
from gsr_rewrite.runtime.patches import Watched
from gsr_rewrite.runtime.precondition import checked

#: Set GSR_DEBUG_POISON=1 (or call `set_debug_poison(True)`) to fill every gradient an R-variant
#: used as scratch with NaN after `step()`, so code reading gradients after the step fails loudly.
_DEBUG_POISON = os.environ.get("GSR_DEBUG_POISON", "") not in ("", "0")


def set_debug_poison(enabled: bool) -> None:
    global _DEBUG_POISON
    _DEBUG_POISON = enabled


def poison_grads(param_groups: Sequence[dict[str, Any]]) -> None:
    """Debug mode only: after step, gradients are undefined; make that visible."""
    if not _DEBUG_POISON:
        return
    with torch.no_grad():  # a gradient that requires grad (a leaf) takes the fill too
        for group in param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_floating_point():
                    p.grad.fill_(float("nan"))


def r_step(original: type, *data: str, fixed_layout: bool = False, watch: Watched | None = None,
           followed: tuple[str, ...] = (), class_attrs: tuple[str, ...] = (),
           scalar_state: tuple[str, ...] = (), owner: type | None = None, **bound: Any
           ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorates an R-variant's `step`. The original class's step runs instead when

    - a group has `differentiable=True` (autograd must see every intermediate);
    - `step` is given a closure or any other argument (a closure may replace the gradients
      after the run-time precondition was checked);
    - the run-time precondition `distinct_buffers` does not hold (duplicated params, gradients
      that overlap each other, a param or a state tensor), or a state entry the analysis took
      for a host scalar (`scalar_state`) holds a tensor of dimensions, or a
      complex value (so does an option);
    - ATTR=F in `bound` (each `self.ATTR(...)` the rewrite analysed as a call of F, what
      `__init__` binds it to) while `self.ATTR` is anything else;
    - an ATTR in `data` (what the analysis took for data: analysis/checked_data.py) holds
      anything but `plain_data`;
    - a method the analysis followed (each `self.m(...)`: `followed`) is not what the R class
      has: the object binds another on itself (user code, or pytorch_optimizer's
      `_compile_foreach`), or the object's class is a user's subclass of the R class that
      overrides it;
    - what the copied code took from other modules or the class was patched since the R module
      was imported (`watch`, patches.py);
    - an attribute the step reads on the object (`class_attrs`) is, on the object's class, a
      descriptor (a property runs code: it may read the gradients; a data descriptor runs even
      where a method binds the name on the object);
    - the object's class hooks attribute access (`ATTRIBUTE_HOOKS`: a user's subclass of the R
      class; the analysis refuses a class that defines one, but the hook of a subclass runs on
      every `self.x` and `hasattr(self, "x")` of the step).

    - the step is being traced by `torch.compile` (Inductor plans the original's temporaries
      itself; the guards' storage checks would break the graph).

    The debug switch poisons reused gradients after the R step. With `fixed_layout` (the class
    was proved to change no tensor's layout in place: analysis/layout.py) the guards inside the
    step look tensors up in the step's layout certificate (layout.py)."""

    def decorate(step: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(step)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            original_only = torch.compiler.is_compiling() or \
                any(a is not None for a in (*args, *kwargs.values())) or \
                any(g.get("differentiable", False) for g in self.param_groups) or \
                any(getattr(self, a, None) is not f for a, f in bound.items()) or \
                not all(plain_data(getattr(self, a, None)) for a in data) or \
                not _methods_hold(self, step, owner, followed) or \
                any(_runs_code(type(self), a) for a in class_attrs) or \
                hooks_attributes(type(self)) or \
                (watch is not None and not watch.holds(type(self)))
            holds, cert = (False, None) if original_only else \
                checked(self, fixed_layout, scalar_state)
            if not holds:  # the R step already runs inside torch's step hooks: not twice
                return unhooked(original.step)(self, *args, **kwargs)  # type: ignore[attr-defined]
            previous = layout.enter(cert)
            try:
                out = step(self, *args, **kwargs)
            finally:
                layout.leave(previous)
            poison_grads(self.param_groups)
            return out

        def on(cls: type) -> Callable[..., Any]:  # the R step moved onto `cls` (api/classes.py)
            return r_step(cls, *data, fixed_layout=fixed_layout,
                          watch=watch.on(cls) if watch is not None else None,
                          followed=followed, class_attrs=class_attrs,
                          scalar_state=scalar_state, owner=cls,
                          **bound)(step)

        wrapper.gsr_on = on  # type: ignore[attr-defined]
        return wrapper

    return decorate


#: set by `api.install` on an object given the R step of `reduce(type(obj))`, made for its class
INSTALLED = "_gsr_installed"


def _methods_hold(obj: Any, step: Any, owner: type | None, names: tuple[str, ...]) -> bool:
    """`obj.m` is the R class's `m` for each of `names`: none is bound on the object (but
    those `api.install` put there, made for its class) and its class resolves them alike."""
    mine = getattr(obj, "__dict__", {})
    installed = mine.get(INSTALLED)
    if any(m in mine and (installed is None or m not in installed) for m in names):
        return False
    return installed is not None or _resolves_alike(type(obj), step, owner, names)


def _resolves_alike(cls: type, step: Any, owner: type | None, names: tuple[str, ...]) -> bool:
    """`cls` resolves each of `names` as the R class does (`owner`, or the class on `cls`'s MRO
    that defines `step`: a user's subclass of the R class may override them); False when no
    class on its MRO is the R class."""
    if owner is None:  # (torch's step hooks wrap the step of every subclass: found by name)
        home, module = step.__qualname__.rpartition(".")[0], step.__module__
        owner = next((c for c in cls.__mro__
                      if c.__qualname__ == home and c.__module__ == module), None)
    return owner is cls or owner is not None and owner in cls.__mro__ and all(
        inspect.getattr_static(cls, m, None) is inspect.getattr_static(owner, m, None)
        for m in names)


def plain_data(v: Any, depth: int = 0) -> bool:
    """A number, string, None, or a list or tuple of them (nested up to 4 deep): nothing in it
    is a tensor, and nothing in it can change in place but the lists themselves."""
    if v is None or type(v) in (int, float, bool, str):
        return True
    return type(v) in (list, tuple) and depth < 4 and all(plain_data(x, depth + 1) for x in v)


def unhooked(step: Any) -> Any:
    """`step` without the hooks `Optimizer.__init__` wraps a class's step in once an object of
    it exists (marked `hooked`): what the class really defines or inherits."""
    return getattr(step, "__wrapped__", step) if getattr(step, "hooked", False) else step


_ABSENT = object()

#: methods Python runs on every attribute of an object its code names (`__getattr__` on one
#: that is absent: `hasattr(self, "x")`)
ATTRIBUTE_HOOKS = ("__getattr__", "__getattribute__", "__setattr__", "__delattr__")


def hooks_attributes(cls: type) -> bool:
    """`cls` (its MRO) defines an attribute hook other than `object`'s."""
    return any(getattr(cls, h, None) is not getattr(object, h, None) for h in ATTRIBUTE_HOOKS)


#: descriptors whose `__get__` is Python's own binding: reading a method runs no user code
_BINDING = (types.FunctionType, staticmethod, classmethod, types.BuiltinFunctionType,
            types.MethodDescriptorType, types.WrapperDescriptorType)


def _runs_code(cls: type, name: str) -> bool:
    """Reading `name` on an object of `cls` may run code: the class (its MRO) holds a descriptor
    (a property, anything with `__get__`) under that name, other than a plain function or
    method (exactly those types: a subclass of staticmethod may bring its own `__get__`)."""
    found = inspect.getattr_static(cls, name, _ABSENT)
    return found is not _ABSENT and hasattr(type(found), "__get__") and \
        type(found) not in _BINDING
