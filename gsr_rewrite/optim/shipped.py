"""Which module in gsr_rewrite/optim/ is generated from which example (scripts/regenerate.py)."""

from __future__ import annotations

from pathlib import Path

#: shipped module (in gsr_rewrite/optim/) -> source example, relative to the repository root
SHIPPED = {"adamw.py": "examples/adamw.py", "adan.py": "examples/adan.py",
           "lion.py": "examples/lion.py"}
#: Triton backend module -> the shipped eager module its classes derive from
SHIPPED_TRITON = {"adamw_triton.py": "adamw.py", "adan_triton.py": "adan.py",
                  "lion_triton.py": "lion.py"}


def generate(repo: Path, module: str) -> str:
    """The text the tool emits today for one shipped module (tests compare it with the file);
    every class in it certified (`validate.certify`), like anything the tool emits."""
    from gsr_rewrite.pipeline import compile_source

    if module in SHIPPED_TRITON:
        return _generate_triton(repo, module)
    source = SHIPPED[module]
    result = compile_source((repo / source).read_text(), source)
    refused = [f"{c.name}: {c.reason}" for c in result.classes if c.status == "refused"]
    if result.code is None or refused:
        raise RuntimeError(f"{source}: not every class was rewritten and certified: {refused}")
    return result.code


def _generate_triton(repo: Path, module: str) -> str:
    import importlib

    from gsr_rewrite.pipeline import rewrite_source
    from gsr_rewrite.triton_backend.generate import triton_classes

    eager = SHIPPED_TRITON[module]
    source = SHIPPED[eager]
    result = rewrite_source((repo / source).read_text(), source)
    names = [(c.name, c.r_name) for c in result.classes if c.status == "rewritten"]
    name = "gsr_rewrite.optim." + eager.removesuffix(".py")
    return triton_classes(importlib.import_module(name), names, import_from=name)[0]
