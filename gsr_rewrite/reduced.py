"""Where the classes `reduce()` returns live, so that their objects pickle across processes.

The R-variant of `pkg.mod.Name` is named `gsr_rewrite.reduced.pkg.mod.NameR`. Importing that
module path in any process gives a module whose attribute `NameR` is `reduce(pkg.mod.Name)`
(cached on disk, so a fresh process gets it in well under a second); pickle finds it there.
`gsr_rewrite/__init__.py` imports this module, so the finder is installed in every process that
imports gsr_rewrite; `gsr_rewrite.api.reduce` gives its classes these names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence
from typing import Any

PREFIX = __name__ + "."
__path__: list[str] = []  # a package: its submodules are made by `_MirrorFinder`


class _Mirror(types.ModuleType):
    """`gsr_rewrite.reduced.<module>`: `<Name>R` is the R-variant of `<module>.<Name>`."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__path__: list[str] = []  # `<module>.<sub>` mirrors are importable too

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or not name.endswith("R"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        from gsr_rewrite.api import reduce

        module = importlib.import_module(self.__name__.removeprefix(PREFIX))
        return reduce(getattr(module, name[:-1]))


class _MirrorFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(PREFIX):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _Mirror(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


if not any(isinstance(f, _MirrorFinder) for f in sys.meta_path):
    sys.meta_path.append(_MirrorFinder())
