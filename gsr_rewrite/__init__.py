"""gsr-rewrite: gradient space reutilization for PyTorch optimizers, as a source-to-source compiler."""

__version__ = "0.1.0"
