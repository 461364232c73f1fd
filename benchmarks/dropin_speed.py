"""Step time of the shipped AdamWR (torch's AdamW, rewritten) against torch's AdamW.

    python benchmarks/dropin_speed.py [--steps N] > benchmarks/results/dropin_speed.md

Three sets of fp32 params (ViT-B/32 shapes: 152 tensors, 88 M; 8 x 1024x1024; 2,000 x 64x64),
for-loop and foreach paths, one CPU thread; original and R stepped in turn in one process
(fresh random gradients before every step, outside the timing), median and spread of the steps
after 2 warm-up steps. Prints a markdown table of R / original.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from gsr_rewrite.optim import AdamWR

HERE = Path(__file__).resolve().parent


def _vit_b32_shapes() -> list[tuple[int, ...]]:
    spec = importlib.util.spec_from_file_location("step_bench", HERE / "step_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["step_bench"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return list(module.param_sets(False)["vit_b32"].shapes)


def _timed(cls: type, shapes: list[tuple[int, ...]], foreach: bool) -> tuple[object, list[float]]:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    return (cls(params, lr=1e-3, foreach=foreach), params), []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per class (default 8)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sets = {"ViT-B/32 shapes (152 tensors)": _vit_b32_shapes(),
            "8 x 1024x1024": [(1024, 1024)] * 8, "2,000 x 64x64": [(64, 64)] * 2000}
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread, "
          f"{args.steps} timed steps after 2 warm-up steps\n")
    print("| params | path | torch AdamW ms | AdamWR ms | R / original (min-max of steps) |")
    print("|---|---|---|---|---|")
    for name, shapes in sets.items():
        for foreach in (False, True):
            runs = [_timed(cls, shapes, foreach) for cls in (torch.optim.AdamW, AdamWR)]
            for step in range(args.steps + 2):
                for (opt, params), times in runs:
                    for p in params:
                        p.grad = torch.randn_like(p)
                    start = time.perf_counter()
                    opt.step()  # type: ignore[attr-defined]
                    if step >= 2:
                        times.append(time.perf_counter() - start)
            (_, a), (_, b) = runs
            ratios = [y / x for x, y in zip(a, b, strict=True)]
            print(f"| {name} | {'foreach' if foreach else 'for-loop'} | "
                  f"{statistics.median(a) * 1e3:.1f} | {statistics.median(b) * 1e3:.1f} | "
                  f"{statistics.median(b) / statistics.median(a):.2f} "
                  f"({min(ratios):.2f}-{max(ratios):.2f}) |", flush=True)


if __name__ == "__main__":
    main()
