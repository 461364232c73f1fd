"""Locate finds optimizer classes by what they are: bases resolved through imports (absolute and
relative) to source files, recursively; methods merged along the method resolution order across
modules; a base that cannot be resolved is reported with its name."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from gsr_rewrite.cli.paths import importable_name, load_job
from gsr_rewrite.errors import RewriteError
from gsr_rewrite.frontend.locate import class_view, parse
from gsr_rewrite.pipeline import rewrite_source
from tests.common import TESTS

PACKAGE = "tests.fixtures.intermediate_base"
FIXTURES = TESTS / "fixtures" / "intermediate_base"


def _parse(name: str, importable: bool = True):  # type: ignore[no-untyped-def]
    path = FIXTURES / f"{name}.py"
    if importable:
        return parse(path.read_text(), str(path), PACKAGE, f"{PACKAGE}.{name}")
    return parse(path.read_text(), str(path))  # a file: relative imports by its folder


@pytest.mark.parametrize("importable", [True, False])
@pytest.mark.parametrize(("name", "cls"), [("adam_like", "AdamLike"),
                                           ("rmsprop_like", "RMSpropLike")])
def test_base_in_another_module_is_followed(name: str, cls: str, importable: bool) -> None:
    src = _parse(name, importable)
    (found,) = src.classes
    assert found.name == cls and not found.unresolved
    # the helpers step calls on self are the base's, from base.py
    for helper in ("_maximize_", "_apply_weight_decay_", "_debias", "_scaled_step"):
        assert found.defined_by[helper] == "BaseOptimizer"
        assert Path(found.origin[helper].filename).name == "base.py"
    assert found.origin["step"] is src and found.defined_by["step"] == cls
    assert (found.origin["_debias"].name == f"{PACKAGE}.base") == importable
    # the analysis works in the module of step and knows where the base's nodes are
    view = class_view(src, found)
    helper = found.methods["_scaled_step"]
    assert view.where(helper).startswith(str(FIXTURES / "base.py") + ":")


def test_torch_adamw_inherits_step_from_adam() -> None:
    path = importlib.import_module("torch.optim.adamw").__file__
    assert path is not None
    src = parse(Path(path).read_text(), path, "torch.optim", "torch.optim.adamw")
    (adamw,) = src.classes
    assert adamw.name == "AdamW"
    assert adamw.defined_by["step"] == "Adam" and adamw.defined_by["__init__"] == "AdamW"
    assert Path(adamw.origin["step"].filename).name == "adam.py"
    view = class_view(src, adamw)  # the analysis runs in adam.py, whose helpers step calls
    assert "_single_tensor_adam" in view.functions and view.name == "torch.optim.adam"


def test_unresolved_bases_are_named() -> None:
    src = _parse("unresolved")
    assert [(c, b) for c, b, _ in src.unresolved] == [("FromMissing", "MissingBase")]
    (half,) = src.classes  # an optimizer through BaseOptimizer, but Mixin is not known
    assert half.name == "HalfKnown" and "`Mixin`" in half.unresolved
    result = rewrite_source((FIXTURES / "unresolved.py").read_text(),
                            str(FIXTURES / "unresolved.py"), PACKAGE, f"{PACKAGE}.unresolved")
    half_known, from_missing = result.classes
    assert half_known.status == "refused" and "`Mixin` cannot be resolved" in half_known.reason
    assert from_missing.status == "refused" and from_missing.name == "FromMissing"
    assert "`MissingBase` cannot be resolved" in from_missing.reason
    assert from_missing.reason.startswith(f"{FIXTURES / 'unresolved.py'}:14:1:")
    assert result.code is None


def test_no_optimizer_found_names_the_unresolved_base(tmp_path: Path) -> None:
    src = tmp_path / "plugin.py"
    src.write_text("from vendor_package_not_installed.optim import Base\n\n\n"
                   "class Fancy(Base):\n    def step(self, closure=None):\n        pass\n")
    with pytest.raises(RewriteError) as e:
        rewrite_source(src.read_text(), str(src))
    assert "no optimizer class found" in str(e.value)
    assert "`Fancy`" in str(e.value) and "Base" in str(e.value)
    assert "vendor_package_not_installed.optim" in str(e.value)


def test_resolution_forms() -> None:
    source = (
        "import torch\nimport torch.nn\nimport torch.optim as optim\n"
        "from torch import optim as o2\nfrom torch.optim import SGD\n\n\n"
        "class A(torch.optim.Optimizer):\n    def step(self):\n        pass\n\n\n"
        "class B(optim.Adam):\n    pass\n\n\nclass C(o2.optimizer.Optimizer):\n    pass\n\n\n"
        "class D(SGD):\n    pass\n\n\nclass E(A):\n    pass\n\n\n"
        "class F(Exception):\n    pass\n\n\n"
        "class G(dict, metaclass=type):\n    pass\n")
    src = parse(source, "<string>")
    assert [c.name for c in src.classes] == ["A", "B", "D", "E"]
    by_name = {c.name: c for c in src.classes}
    assert by_name["E"].defined_by["step"] == "A" and by_name["D"].defined_by["step"] == "SGD"
    # torch/optim/__init__.py ends with `del optimizer` (and the others): no such attribute; G's
    # metaclass is not ABCMeta
    assert [(c, b) for c, b, _ in src.unresolved] == [("C", "o2.optimizer.Optimizer"),
                                                      ("G", "metaclass=type")]


def test_an_import_of_a_submodule_in_try_keeps_the_package_binding() -> None:
    """timm's kron.py: `import torch`, then `import torch.backends.opt_einsum` inside `try`; both
    bind `torch` to the package. A conditional binding of anything else stays unresolved."""
    source = ("import torch\ntry:\n    import torch.backends.opt_einsum\n"
              "except ImportError:\n    pass\n\n\n"
              "class K(torch.optim.Optimizer):\n    def step(self):\n        pass\n")
    assert [c.name for c in parse(source, "<string>").classes] == ["K"]
    other = source.replace("import torch.backends.opt_einsum", "import numpy as torch")
    src = parse(other, "<string>")
    assert not src.classes and [c for c, _, _ in src.unresolved] == ["K"]


def test_a_class_level_rebinding_hides_the_base_method() -> None:
    source = ("import torch\n\n\nclass Base(torch.optim.Optimizer):\n"
              "    def helper(self):\n        pass\n\n"
              "    def step(self):\n        self.helper()\n\n\n"
              "class Child(Base):\n    helper = None\n")
    child = parse(source, "<string>").classes[1]
    assert "helper" not in child.methods and child.defined_by["step"] == "Base"


def test_importable_name_of_a_file() -> None:
    assert str(TESTS.parent) in [str(Path(p).resolve()) for p in sys.path if p]
    assert importable_name(FIXTURES / "adam_like.py") == f"{PACKAGE}.adam_like"
    assert importable_name(FIXTURES / "__init__.py") == PACKAGE
    job = load_job(str(FIXTURES / "rmsprop_like.py"))
    assert (job.module, job.package) == (f"{PACKAGE}.rmsprop_like", PACKAGE)
    job = load_job("torch.optim.adamw")
    assert (job.module, job.package) == ("torch.optim.adamw", "torch.optim")


def test_not_importable_file(tmp_path: Path) -> None:
    path = tmp_path / "opt.py"
    path.write_text("x = 1\n")
    assert importable_name(path) is None
    assert load_job(str(path)).module is None


def test_a_rebound_class_name_is_refused() -> None:
    source = ("import torch\n\n\nclass A(torch.optim.Optimizer):\n    def step(self):\n"
              "        pass\n\n\nA = staticmethod(A)\n")
    (a,) = parse(source, "<string>").classes
    assert "`A` is bound more than once" in a.unresolved


@pytest.mark.parametrize(("handler", "known"), [
    ("    _fused = None\n", True), ("    pass\n", True),
    ("    def _fused(params):\n        return params\n", False),
    ("    from other import _fused\n", False), ("    _fused = make()\n", False)])
def test_an_optional_import_binds_the_import_or_none(handler: str, known: bool) -> None:
    """`try: from m import f` / `except ImportError: f = None`: f is the import or None, so the
    catalog may describe it; any other fallback makes f unknown."""
    import libcst as cst

    from gsr_rewrite.frontend.source import module_imports

    source = ("try:\n    from torch.optim.optimizer import _default_to_fused_or_foreach as _fused\n"
              f"except ImportError:\n{handler}")
    imports = module_imports(cst.parse_module(source))
    assert (imports.get("_fused") == "torch.optim.optimizer._default_to_fused_or_foreach") == known


def test_abc_as_a_base_is_known() -> None:
    """pytorch_optimizer's `class BaseOptimizer(ABC, Optimizer)`: abc.ABC has no methods and its
    metaclass finds an instance's methods as `type` does; the optimizers below it are found, and
    their methods come from the base."""
    source = ("import abc\nfrom abc import ABC, abstractmethod\n\nimport torch\n\n\n"
              "class Base(ABC, torch.optim.Optimizer):\n"
              "    @abstractmethod\n    def init_group(self, group):\n        pass\n\n"
              "    def step(self):\n        pass\n\n\n"
              "class Mine(Base):\n    def init_group(self, group):\n        pass\n\n\n"
              "class Other(abc.ABC, torch.optim.Optimizer):\n    def step(self):\n        pass\n")
    src = parse(source, "<string>")
    assert [c.name for c in src.classes] == ["Base", "Mine", "Other"]
    assert next(c for c in src.classes if c.name == "Mine").defined_by["step"] == "Base"
