"""Run-time support imported by generated R-variants (their one import: `from gsr_rewrite import
runtime as _gsr`): a small, stable surface; its parts are

- guards.py: may a buffer hold a temporary exactly (`fits`, `fits_lists`);
- placement.py: computing a temporary in its host (`foreach_into`, `scalar_first`, ...);
- precondition.py: the per-step check that gradients and state own their bytes;
- layout.py: the per-step layout certificate the guards look tensors up in;
- step.py: `r_step`, the wrapper that runs the original step where the R step would not be exact;
- patches.py: what the R module took from other modules and the class, checked for patches;
- strip_runs.py: strip-mined runs (`strips`, `at`, `part`);
- triton_launch.py, triton_lib.py: the same for generated Triton modules (host and device side).
"""

from gsr_rewrite.runtime.guards import GUARD_HITS, falsy, fits, fits_lists, truthy
from gsr_rewrite.runtime.patches import same_sources, watch
from gsr_rewrite.runtime.placement import (
    foreach_inplace,
    foreach_into,
    foreach_out,
    scalar_first,
    scalar_first_,
)
from gsr_rewrite.runtime.precondition import distinct_buffers
from gsr_rewrite.runtime.step import poison_grads, r_step, set_debug_poison, unhooked
from gsr_rewrite.runtime.strip_runs import (
    STRIP_ALIGN,
    STRIP_FRACTION,
    At,
    StripItem,
    at,
    fine_strips,
    part,
    strip_floor,
    strips,
)

__all__ = ["GUARD_HITS", "STRIP_ALIGN", "STRIP_FRACTION", "At", "StripItem", "at",
           "distinct_buffers", "falsy", "fine_strips", "fits", "fits_lists", "foreach_inplace",
           "foreach_into", "foreach_out", "part", "poison_grads", "r_step", "same_sources",
           "scalar_first", "scalar_first_", "set_debug_poison", "strip_floor", "strips", "truthy",
           "unhooked", "watch"]
