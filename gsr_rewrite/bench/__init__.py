"""Benchmarks of R-variants against their original optimizers.

``python -m gsr_rewrite.bench memory ...``: peak memory of a whole training step (see
:mod:`gsr_rewrite.bench.memory`). Nothing is imported here, so ``python -m
gsr_rewrite.bench.measure`` (the per-configuration child process) starts without extra modules.
"""
