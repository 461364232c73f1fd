"""The package's layout stays the architecture (ARCHITECTURE.md): no import cycles, no module a
reader cannot hold at once, a test folder per sub-package, and the import paths generated modules
use keep working."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from types import ModuleType

from tests.common import REPO, TESTS

PACKAGE = REPO / "gsr_rewrite"
#: written modules may exceed this only when listed below with the reason they do not split
MAX_LINES = 420
ONE_IDEA: dict[str, str] = {}


def _stats() -> ModuleType:
    spec = importlib.util.spec_from_file_location("layout_stats", REPO / "scripts" /
                                                  "layout_stats.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _written() -> dict[str, int]:
    """Line counts of the modules people write (not the generated ones in optim/)."""
    stats = _stats()
    return {stats.module_name(f, PACKAGE): len(f.read_text().splitlines())
            for f in PACKAGE.rglob("*.py") if "optim" not in f.relative_to(PACKAGE).parts}


def test_no_import_cycles() -> None:
    stats = _stats()
    files = sorted(PACKAGE.rglob("*.py"))
    names = {stats.module_name(f, PACKAGE): f for f in files}
    graph = {n: stats.imported(ast.parse(f.read_text()), n, set(names))
             for n, f in names.items()}
    assert stats.cycles(graph) == []


def test_no_module_too_long_to_read_at_once() -> None:
    long = {n: k for n, k in _written().items() if k > MAX_LINES and n not in ONE_IDEA}
    assert not long, f"split these along their seams (or list them in ONE_IDEA): {long}"


def test_a_test_folder_per_subpackage() -> None:
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")} - {"rules"}
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert packages <= folders, f"sub-packages without tests/<name>/: {packages - folders}"


def test_generated_modules_import_paths_still_resolve() -> None:
    """Modules generated before the layout change import these; each is the module itself."""
    from gsr_rewrite import runtime
    from gsr_rewrite.runtime import triton_launch, triton_lib

    assert importlib.import_module("gsr_rewrite.triton_runtime") is triton_launch
    assert importlib.import_module("gsr_rewrite.triton_lib") is triton_lib
    for name in ("fits", "fits_lists", "foreach_into", "foreach_inplace", "foreach_out", "r_step",
                 "scalar_first", "scalar_first_", "strips", "at"):
        assert callable(getattr(runtime, name)), name


def test_every_subpackage_is_installed() -> None:
    """pyproject.toml lists packages by name: a new folder missing there is missing from wheels."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml [tool.setuptools] packages: {found - listed}"


def test_no_module_is_hidden_by_a_name_of_its_package() -> None:
    """`from gsr_rewrite.runtime import strips` must mean one thing: a package that re-exports a
    function under the name of one of its modules makes `import pkg.mod as m` give the function."""
    import pkgutil

    import gsr_rewrite

    for info in pkgutil.walk_packages(gsr_rewrite.__path__, "gsr_rewrite."):
        if info.name.endswith("__main__") or info.name.startswith("gsr_rewrite.optim."):
            continue  # running them runs a command; shipped modules need no check
        module = importlib.import_module(info.name)
        package, _, short = info.name.rpartition(".")
        assert getattr(importlib.import_module(package), short) is module, info.name
