"""Stage 1, locate: module-level functions that `step`'s module imports from other modules of its
package, or of other packages (`from ._helpers import ema_`), found by resolving the import to
the source file that defines them (resolve.py).

The analysis follows them as it follows the module's own helpers, with the names of the module
that defines them. Not followed: a name the op catalog describes (its entry is what torch's
function does), a function defined in torch itself (torch's helpers are described by the
catalog, not read), anything bound other than by one plain `def` there, and async functions.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import libcst as cst

from gsr_rewrite.frontend.bases import parse_module_file
from gsr_rewrite.frontend.catalog import OpCatalog
from gsr_rewrite.frontend.resolve import FunctionRef, Resolver, module_path
from gsr_rewrite.frontend.source import SourceModule, absolute_origin, same_module


def with_imported_functions(src: SourceModule, catalog: OpCatalog) -> SourceModule:
    """src, knowing the functions it imports and calls by plain name (`SourceModule.imported`),
    and the modules that define them among `others` (their positions)."""
    called = _called_names(src.module)
    candidates = sorted(n for n in called if n in src.imports and n not in src.functions and
                        catalog.function(absolute_origin(src.imports[n], src.package)) is None and
                        catalog.function(src.imports[n]) is None)
    if not candidates:
        return src
    try:
        tree = ast.parse(src.source)
    except (SyntaxError, ValueError):
        return src
    path = Path(src.filename)
    resolver = Resolver()
    here = resolver.add(tree, path.resolve() if path.suffix == ".py" and path.is_file() else None,
                        src.name, src.package)
    torch_dir = _torch_dir()
    found: dict[str, tuple[cst.FunctionDef, SourceModule]] = {}
    for name in candidates:
        ref = resolver.attribute(here, name)
        if not isinstance(ref, FunctionRef) or ref.module.path is None or \
                (torch_dir is not None and ref.module.path.is_relative_to(torch_dir)):
            continue
        owner = parse_module_file(ref.module)
        func = owner.functions.get(ref.name) if owner is not None else None
        if owner is None or func is None or func.asynchronous is not None or \
                same_module(owner, src):
            continue
        found[name] = (func, owner)
    if not found:
        return src
    others = list(src.others)
    for _, owner in found.values():
        if all(not same_module(owner, m) for m in others):
            others.append(owner)
    return dataclasses.replace(src, imported=found, others=others)


def _called_names(module: cst.Module) -> set[str]:
    names: set[str] = set()

    class _Calls(cst.CSTVisitor):
        def visit_Call(self, node: cst.Call) -> None:
            if isinstance(node.func, cst.Name):
                names.add(node.func.value)

    module.visit(_Calls())
    return names


def _torch_dir() -> Path | None:
    found = module_path("torch")
    return found[0].parent if found is not None else None
