"""Stage 4c, strip-mining: bound the temporaries that found no dead buffer.

A temporary that no dead buffer can hold (RMSprop's `avg`: the gradient is still needed when it
is consumed) can still be made small. Its live range is a run of statements of one block; when
every statement in that run works element by element (catalog ops, in-place ops on the run's own
tensors, host arithmetic that does not accumulate), running the run once per *strip* of the
elements computes exactly what running it once on whole tensors does, and the temporary is only
ever one strip large:

    for grads_strip, avgs_strip, ... in _gsr.strips(64, grads, avgs, ...):
        <the statements, on strip views>

`runtime.strips` slices every tensor (or every tensor of every list, position by position) into
the same aligned, contiguous element ranges, so scalar lists keep their positions; it yields the
whole tensors once when it cannot slice them (non-contiguous, mismatched shapes). With one strip
per 1/64 of the elements per temporary, the temporaries of a run stay below 1/64 of the
parameters each (measured in tests/transform/test_stripmine.py and the corpus).

A run over tensor lists that touches them only position by position (torch foreach calls,
loops over their positions) is emitted with `chunks=True`: under the run-time strip floor it then
goes over consecutive whole tensors that fit its budget together and cuts only a tensor larger
than the budget, so a run over 2,000 small tensors makes a few foreach calls per statement, not
one per strip (`chunks`).

A run is refused, with its reason, when it reaches a tensor through `p.grad` or optimizer state,
calls an unknown function or a helper that is not itself per element, reduces or reshapes a
tensor, branches on tensor contents, mutates anything that is not one of its strip views
(`state["step"] += 1` would run once per strip), reads a host variable it also assigns before
assigning it, or leaves a tensor variable it assigned live after it.

The parts, in the order a function goes through them:

- `finder`: `strip_mine`, the entry point: which live ranges become regions.
- `region`: `StripRegion`, the refusal `_Refuse`, and where a live range lies in the CST.
- `region_checks`: what a whole run may do (one entry, no loop-carried strips, host lines
  that run once, nothing assigned in it read after it).
- `checker`: `_Checker`, the per-statement evaluation: is each expression a strip?
- `helpers`: which helpers a run may call once per strip (their whole body per element).
- `aliases`: which host names may share an object (for the lines that run once).
- `chunks`: which runs may take chunks of whole tensors, and the `part` calls they need.
- `emission`: the strip loop that replaces the run (`wrap_region`, `guard_once`).
"""

from gsr_rewrite.transform.stripmine.emission import fresh_name, guard_once, wrap_region
from gsr_rewrite.transform.stripmine.finder import strip_mine
from gsr_rewrite.transform.stripmine.helpers import per_element_helpers, position_wise
from gsr_rewrite.transform.stripmine.region import StripRegion

__all__ = ["StripRegion", "fresh_name", "guard_once", "per_element_helpers", "position_wise",
           "strip_mine", "wrap_region"]
