"""What a decorator on an analysed function is, by the qualified name of what it names.

A decorator replaces the function by whatever it returns: a wrapper that may keep, read or
write what it is given after the function returns. Two kinds are known, by where their name
comes from (the defining module's imports, made absolute), never by the name alone (a module of
its own `no_grad` is not torch's):

- "mode": it only switches autograd or compilation modes around the function it wraps
  (`@torch.no_grad()`, `@staticmethod`, torch.optim's `_use_grad_for_differentiable`).
- "compile": `@torch.compile`: Dynamo runs the function with its eager semantics (what it
  reads, writes, returns and keeps is what its body says), but Inductor plans its memory; so it
  is analysed like any helper, and nothing in it is rewritten (planned placements or
  strip-mined runs there would add Python guards Dynamo traces and recompiles on).

Any other decorator is None: the gradients the function reaches escape (interprocedural.py).
"""

from __future__ import annotations

from typing import Literal

import libcst as cst

from gsr_rewrite.frontend.scopes import bound_names
from gsr_rewrite.frontend.source import SourceModule, absolute_origin
from gsr_rewrite.frontend.syntax import dotted

Kind = Literal["mode", "compile"]

_MODE = frozenset({
    "torch.no_grad", "torch.enable_grad", "torch.inference_mode",
    "torch.autograd.no_grad", "torch.autograd.enable_grad", "torch.autograd.inference_mode",
    "torch.autograd.grad_mode.no_grad", "torch.autograd.grad_mode.enable_grad",
    "torch.autograd.grad_mode.inference_mode",
    "torch._disable_dynamo", "torch.compiler.disable", "torch._dynamo.disable",
    "torch.optim.optimizer._use_grad_for_differentiable",
    "torch.optim.optimizer._disable_dynamo_if_unsupported",
    "staticmethod", "classmethod",  # builtins, when the module does not bind the name
})
_COMPILE = frozenset({"torch.compile"})


def decorator_kind(decorator: cst.BaseExpression, home: SourceModule) -> Kind | None:
    """The kind of `@decorator` on a function defined in `home`; None when it is not known."""
    name = dotted(decorator.func if isinstance(decorator, cst.Call) else decorator)
    if name is None:
        return None
    root, _, rest = name.partition(".")
    origin = home.imports.get(root)
    if origin is None:
        if root in _module_bindings(home):  # a function, class or variable of the module
            return None
        qualified = name
    else:
        origin = absolute_origin(origin, home.package)
        qualified = f"{origin}.{rest}" if rest else origin
    if qualified in _COMPILE:
        return "compile"
    return "mode" if qualified in _MODE else None


def is_compiled(func: cst.FunctionDef, home: SourceModule) -> bool:
    return any(decorator_kind(d.decorator, home) == "compile" for d in func.decorators)


def _module_bindings(home: SourceModule) -> frozenset[str]:
    """What the module's top level binds other than by import statements."""
    return frozenset(home.functions).union(*(bound_names(s, imports=False)
                                             for s in home.module.body
                                             if not isinstance(s, cst.FunctionDef)))
