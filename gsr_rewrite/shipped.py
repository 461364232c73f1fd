"""Which module in gsr_rewrite/optim/ is generated from which example (scripts/regenerate.py)."""

from __future__ import annotations

from pathlib import Path

#: shipped module (in gsr_rewrite/optim/) -> source example, relative to the repository root
SHIPPED = {"adamw.py": "examples/adamw.py", "adan.py": "examples/adan.py",
           "lion.py": "examples/lion.py"}


def generate(repo: Path, module: str) -> str:
    """The text the tool emits today for one shipped module (tests compare it with the file)."""
    from gsr_rewrite.pipeline import rewrite_source

    source = SHIPPED[module]
    result = rewrite_source((repo / source).read_text(), source)
    if result.code is None:
        raise RuntimeError(f"{source}: nothing was rewritten")
    return result.code
