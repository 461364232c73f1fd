"""gsr-rewrite: gradient space reutilization for PyTorch optimizers (source-to-source)."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "reduce"]


def __getattr__(name: str) -> Any:
    """`gsr_rewrite.reduce(cls)`, imported on first use (it pulls in torch and the pipeline)."""
    if name == "reduce":
        from gsr_rewrite.api import reduce

        return reduce
    raise AttributeError(f"module 'gsr_rewrite' has no attribute {name!r}")
