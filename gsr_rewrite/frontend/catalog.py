"""The op catalog (rules/op_catalog.toml): which torch ops allocate, and allocation-free forms."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class ElementwiseOp:
    name: str
    arity: int
    out: bool  # `torch.NAME(..., out=h)` exists and is allocation-free
    inplace: str  # in-place method name, "" when none
    commutative: bool
    foreach: bool  # `torch._foreach_NAME_` exists


@dataclass(frozen=True)
class KnownFunction:
    """A function imported from another module whose effect on tensors is known."""

    name: str
    effect: str  # alias | fresh | metadata | group (see rules/op_catalog.toml)
    arg: int  # alias: the positional argument returned
    defined_in: tuple[str, ...]  # modules (or classes) that define it


@dataclass(frozen=True)
class OpCatalog:
    elementwise: dict[str, ElementwiseOp]
    creation: dict[str, str]  # torch.NAME(x) -> how a host is filled: copy, zero, one, none
    view: frozenset[str]
    reduce: frozenset[str]
    metadata: frozenset[str]
    inplace_kill: frozenset[str]
    constructor: frozenset[str]
    functions: dict[str, KnownFunction]

    def inplace_base(self, method: str) -> ElementwiseOp | None:
        """The elementwise op whose in-place method is `method` (`add_` -> add)."""
        for op in self.elementwise.values():
            if op.inplace and op.inplace == method:
                return op
        return None

    def function(self, qualified: str) -> KnownFunction | None:
        """The known function a call resolves to: `typing.cast`, or `.optimizer._get_value` (a
        relative import matches a defining module that ends with the same dotted path)."""
        owner, _, name = qualified.rpartition(".")
        spec = self.functions.get(name)
        if spec is None or not owner:
            return None
        rel = owner.lstrip(".")
        for d in spec.defined_in:
            if d == owner or (owner.startswith(".") and (d == rel or d.endswith("." + rel))):
                return spec
        return None


def _catalog_text() -> str:
    try:
        return resources.files("gsr_rewrite.rules").joinpath("op_catalog.toml").read_text()
    except ModuleNotFoundError:  # running from a source tree that is not installed
        from pathlib import Path

        return (Path(__file__).resolve().parents[2] / "rules" / "op_catalog.toml").read_text()


@cache
def load_catalog() -> OpCatalog:
    data = tomllib.loads(_catalog_text())
    elementwise = {
        name: ElementwiseOp(
            name=name,
            arity=int(spec["arity"]),
            out=bool(spec.get("out", False)),
            inplace=str(spec.get("inplace", "")),
            commutative=bool(spec.get("commutative", False)),
            foreach=bool(spec.get("foreach", False)),
        )
        for name, spec in data["elementwise"].items()
    }
    methods = data["methods"]
    return OpCatalog(
        elementwise=elementwise,
        creation={name: str(spec["fill"]) for name, spec in data["creation"].items()},
        view=frozenset(methods["view"]),
        reduce=frozenset(methods["reduce"]),
        metadata=frozenset(methods["metadata"]),
        inplace_kill=frozenset(methods["inplace_kill"]),
        constructor=frozenset(methods.get("constructor", [])),
        functions={
            name: KnownFunction(name, str(spec["effect"]), int(spec.get("arg", 0)),
                                tuple(spec["defined_in"]))
            for name, spec in data.get("functions", {}).items()
        },
    )
