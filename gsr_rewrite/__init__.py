"""gsr-rewrite: gradient space reutilization for PyTorch optimizers."""

__version__ = "0.1.0"
