"""Temporaries of one step on ViT-B/32 parameter shapes with the run-time strip floor users get,
original against `gsr_rewrite.reduce(CLASS)`, both paths (CPU profiler replay, in parameter-sizes).

    python benchmarks/floor_memory.py torch.optim.RMSprop torch.optim.Rprop

The corpus and `--check` measure with the floor off (the strips the rewrite emits); this shows
what a strip-mined class allocates where a user runs it.
"""

from __future__ import annotations

import argparse
import functools
import importlib

from step_time import paths, vit_b32_shapes  # benchmarks/ is on sys.path when run as a script

import gsr_rewrite
from gsr_rewrite.proof.memory import measure_temporaries
from gsr_rewrite.runtime.strip_runs import strip_floor_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("classes", nargs="+", metavar="CLASS", help="e.g. torch.optim.RMSprop")
    args = ap.parse_args()
    shapes = vit_b32_shapes()
    print(f"strip floor {strip_floor_bytes() / 2**20:g} MiB, ViT-B/32 shapes ({len(shapes)} "
          "tensors)\n")
    print("| class | path | original | R-variant |")
    print("|---|---|---|---|")
    for dotted in args.classes:
        module, _, name = dotted.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        r_cls = gsr_rewrite.reduce(cls)
        for kw in paths(cls):
            before, after = (measure_temporaries(functools.partial(c, **kw), shapes).units
                             for c in (cls, r_cls))
            path = "foreach" if kw.get("foreach") else "for-loop"
            print(f"| {dotted} | {path} | {before:.3f} | {after:.3f} |", flush=True)


if __name__ == "__main__":
    main()
