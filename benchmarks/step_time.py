"""Step time of R-variants against their originals, as a markdown table of R / original.

    python benchmarks/step_time.py [--steps N] [--cases vit,8x1024,2000x64] [CLASS ...] \\
        > benchmarks/results/step_time.md

CLASS is a dotted optimizer class; its R-variant is `gsr_rewrite.reduce(CLASS)`. By default: the
shipped ones (torch.optim.AdamW is what gsr_rewrite.optim.AdamWR reduces; the reference Adan and
Lion of gsr_rewrite.optim) and every class the corpus strip-mines (torch.optim RMSprop, Adagrad,
Adadelta, NAdam, Rprop; lion-pytorch's Lion and adan-pytorch's Adan when installed).

Cases: ViT-B/32 parameter shapes (152 tensors, 88 M), 8 x 1024x1024, 2,000 x 64x64; fp32; the
for-loop and foreach paths where the constructor takes `foreach`. One CPU thread; original and R
stepped in turn in one process (`proof.memory.time_step_pair`, fresh random gradients before
every step, outside the timing), with the run-time strip floor users get; the median ratio and
its spread (min-max over the pairs of timed steps) after 2 warm-up steps.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import inspect
import platform
import sys
from pathlib import Path

import torch

import gsr_rewrite
from gsr_rewrite.proof.memory import time_step_pair
from gsr_rewrite.runtime.strip_runs import strip_floor_bytes

HERE = Path(__file__).resolve().parent
DEFAULT = ["torch.optim.AdamW", "gsr_rewrite.optim.adan.Adan", "gsr_rewrite.optim.lion.Lion",
           "torch.optim.RMSprop", "torch.optim.Adagrad", "torch.optim.Adadelta",
           "torch.optim.NAdam", "torch.optim.Rprop", "lion_pytorch.Lion", "adan_pytorch.Adan"]


def vit_b32_shapes() -> list[tuple[int, ...]]:
    spec = importlib.util.spec_from_file_location("step_bench", HERE / "step_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["step_bench"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return list(module.param_sets(False)["vit_b32"].shapes)


CASES = {"vit": ("ViT-B/32 shapes (152 tensors)", vit_b32_shapes),
         "8x1024": ("8 x 1024x1024", lambda: [(1024, 1024)] * 8),
         "2000x64": ("2,000 x 64x64", lambda: [(64, 64)] * 2000)}


def load(dotted: str) -> type | None:
    module, _, name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError:
        return None
    return cls if isinstance(cls, type) else None


def paths(cls: type) -> list[dict[str, bool]]:
    takes = "foreach" in inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    return [{"foreach": False}, {"foreach": True}] if takes else [{}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("classes", nargs="*", default=DEFAULT, metavar="CLASS")
    ap.add_argument("--steps", type=int, default=15, help="timed steps per pair (default 15)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"of {', '.join(CASES)}")
    args = ap.parse_args()
    cases = [(CASES[c][0], CASES[c][1]()) for c in args.cases.split(",")]
    print(f"gsr-rewrite {gsr_rewrite.__version__}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, 1 thread, strip floor "
          f"{strip_floor_bytes() / 2**20:g} MiB; {args.steps} timed steps after 2 warm-up "
          "steps\n")
    print("| class | params | path | original ms | R ms | R / original (min-max) |")
    print("|---|---|---|---|---|---|")
    for dotted in args.classes:
        cls = load(dotted)
        if cls is None:
            print(f"| {dotted} | — | — | — | — | not installed |", flush=True)
            continue
        r_cls = gsr_rewrite.reduce(cls)
        for label, shapes in cases:
            for kw in paths(cls):
                t = time_step_pair(functools.partial(cls, **kw), functools.partial(r_cls, **kw),
                                   shapes, steps=args.steps, min_steps=args.steps,
                                   budget_s=float("inf"), floor=None)
                path = "foreach" if kw.get("foreach") else "for-loop"
                print(f"| {dotted} | {label} | {path} | {t.original_s * 1e3:.1f} | "
                      f"{t.rewritten_s * 1e3:.1f} | {t.ratio:.2f} ({min(t.ratios):.2f}-"
                      f"{max(t.ratios):.2f}) |", flush=True)


if __name__ == "__main__":
    main()
