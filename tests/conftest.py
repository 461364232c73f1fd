"""Without a GPU, Triton kernels run in Triton's CPU interpreter (must be set before import).
One intra-op thread: strip-mined runs cut CPU tensors of more than 32,768 elements into strips
only then (runtime/strip_runs.py: CPU_PARALLEL_GRAIN); tests/runtime/test_strips.py checks the
threaded case itself."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(1)
