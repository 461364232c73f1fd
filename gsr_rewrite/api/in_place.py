"""`install(opt)` / `uninstall(opt)`: one existing optimizer object gets its class's R step,
its type unchanged (for code that checks `type(opt)`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch

from gsr_rewrite.api.classes import _calls_super, _function, reduce
from gsr_rewrite.errors import RewriteError
from gsr_rewrite.runtime import unhooked
from gsr_rewrite.runtime.step import INSTALLED


def install(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Give `optimizer` the R step of its class in place; `type(optimizer)` stays what it was.

    For code that checks `type(opt)` (DeepSpeed ZeRO's list of tested optimizers,
    `DDP._register_fused_optim`): the methods `reduce(type(optimizer))` rewrote (step and the
    helpers it calls) become attributes of this one object, `step` wrapped in torch's step hooks
    as the class's is. Install before creating LR schedulers or wrappers that replace
    `optimizer.step` (a step already replaced on the object is refused). Pickling an installed
    optimizer keeps only its state (torch pickles `defaults`, `state`, `param_groups`): install
    again after loading. `uninstall` undoes it. Returns `optimizer`.
    """
    cls = type(optimizer)
    if INSTALLED in vars(optimizer):
        return optimizer
    if "step" in vars(optimizer):
        raise RewriteError(f"{cls.__qualname__}.step", "this optimizer's step was already "
                           "replaced on the object (an LR scheduler or a wrapper); install the "
                           "R step before creating them")
    r_cls = reduce(cls)
    methods = {name: fn for name, fn in vars(r_cls).items() if callable(fn)
               and not (name.startswith("__") and name.endswith("__"))}
    if not issubclass(r_cls, cls):  # the methods were made for a regenerated copy of `cls`:
        for name, fn in methods.items():  # they run on `cls` objects unless they call super()
            if _calls_super(_function(fn)):
                raise RewriteError(f"{r_cls.__qualname__}.{name}", "calls super(): it cannot "
                                   f"run on a {cls.__qualname__} object; use the class "
                                   f"{r_cls.__name__} instead")
    for name, fn in methods.items():
        if name == "step":  # torch's step hooks, once (an R object's class step has them)
            fn = torch.optim.Optimizer.profile_hook_step(cast(Callable[..., Any], unhooked(fn)))
        setattr(optimizer, name, fn.__get__(optimizer, cls))
    setattr(optimizer, INSTALLED, tuple(methods))
    return optimizer


def uninstall(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Undo `install`: the object runs its class's methods again. Returns `optimizer`."""
    for name in vars(optimizer).pop(INSTALLED, ()):
        vars(optimizer).pop(name, None)
    return optimizer
