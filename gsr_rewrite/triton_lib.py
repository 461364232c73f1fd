"""Old import path of `gsr_rewrite.runtime.triton_lib`, kept for Triton modules generated
before the package was laid out in sub-packages (0.1.0): the same module object, not a copy."""

import sys

from gsr_rewrite.runtime import triton_lib

sys.modules[__name__] = triton_lib
