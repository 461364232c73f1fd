"""The configurations an optimizer is checked with, read off its constructor: the foreach paths
(`foreach_paths`), the stress configurations (`stress_configs`), and the options of a second
param group (`second_group_options`).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any, TypeGuard

import torch
from torch.nn import Parameter
from torch.optim import Optimizer

#: What the checks take: an optimizer class, or any callable that builds one from params.
OptimizerClass = Callable[..., Optimizer]

#: Constructor options that choose an implementation, not the arithmetic: never varied.
PATH_OPTIONS = ("foreach", "fused", "differentiable", "capturable")


def is_number(value: Any) -> TypeGuard[int | float]:
    """An int or a float, not a bool."""
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
               if is_number(o.default) and o.default == 0}
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


def second_group_options(original_cls: OptimizerClass,
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
        if key == "lr" and is_number(value):
            scaled[key] = value / 2
        elif key not in PATH_OPTIONS and isinstance(value, float) and value > 0:
            scaled[key] = value * 0.9
        elif isinstance(value, tuple) and value and all(isinstance(v, float) for v in value):
            scaled[key] = tuple(v * 0.9 for v in value)
    lr_only = {key: v for key, v in scaled.items() if key == "lr"}
    return [scaled, lr_only] if scaled != lr_only else [scaled]


def accepts(cls: OptimizerClass, name: str) -> bool:
    """Whether the constructor's signature names the option ``name``."""
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def default_lr(cls: OptimizerClass, kwargs: dict[str, Any]) -> Any:
    """The lr a group gets when the constructor is not given one (None: no lr option)."""
    try:
        return _probe(cls, kwargs).defaults.get("lr")
    except Exception:
        return None


def foreach_paths(cls: OptimizerClass) -> list[dict[str, Any]]:
    """The constructor options of each foreach path: none when it takes no ``foreach``."""
    return [{"foreach": False}, {"foreach": True}] if accepts(cls, "foreach") else [{}]
