"""Stage 1, locate: parse the module, find optimizer classes, their `step` and its helpers.

The parsed module and its classes are in source.py; which classes are optimizers, and the methods
each has along its bases (in this module or others), in bases.py and resolve.py."""

from __future__ import annotations

from gsr_rewrite.frontend.bases import optimizer_classes
from gsr_rewrite.frontend.source import (
    OptimizerClass,
    SourceModule,
    class_view,
    module_imports,
    parse_module,
)

__all__ = ["OptimizerClass", "SourceModule", "class_view", "module_imports", "parse",
           "parse_module"]


def parse(source: str, filename: str, package: str | None = None,
          module: str | None = None) -> SourceModule:
    """Parse a module and find its optimizer classes (`bases.optimizer_classes`): `package`
    resolves its relative imports, `module` is its importable dotted name (both when known)."""
    src = parse_module(source, filename)
    src.name, src.package = module, package
    src.classes, src.unresolved = optimizer_classes(src)
    return src
