"""Old import path of `gsr_rewrite.runtime.triton_launch`, kept for Triton modules generated
before the package was laid out in sub-packages (0.1.0): the same module object, not a copy."""

import sys

from gsr_rewrite.runtime import triton_launch

sys.modules[__name__] = triton_launch
