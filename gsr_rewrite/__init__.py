"""gsr-rewrite: gradient space reutilization for PyTorch optimizers (source-to-source)."""

from typing import Any

from gsr_rewrite import reduced  # noqa: F401  (installs the finder of reduce()'s class names)
from gsr_rewrite.version import __version__

__all__ = ["__version__", "install", "reduce", "uninstall"]


def __getattr__(name: str) -> Any:
    """`gsr_rewrite.reduce(cls)`, `install(opt)`, `uninstall(opt)`, imported on first use (they
    pull in torch and the pipeline)."""
    if name in ("reduce", "install", "uninstall"):
        from gsr_rewrite import api

        return getattr(api, name)
    raise AttributeError(f"module 'gsr_rewrite' has no attribute {name!r}")
