#!/usr/bin/env python
"""Wall time of one ``step()``: an installed optimizer class vs its R-variant (reduce).

Strip-mined runs call each op once per strip, so their cost is per-call overhead; this measures
it as a ratio in one run (timings on shared machines are noisy). 8 fp32 params per shape, fresh
random grads before each step (outside the timed region), one untimed step first, then the mean
of ``--steps`` steps, for the for-loop and foreach paths.

    python benchmarks/strip_time.py torch.optim.Rprop torch.optim.NAdam
"""

from __future__ import annotations

import argparse
import importlib
import time

import torch

import gsr_rewrite

SHAPES = ((1024, 1024), (64, 64))


def step_seconds(cls: type, shape: tuple[int, ...], foreach: bool, steps: int) -> float:
    params = [torch.nn.Parameter(torch.randn(shape)) for _ in range(8)]
    opt = cls(params, foreach=foreach)
    total = 0.0
    for k in range(steps + 1):
        for p in params:
            p.grad = torch.randn(shape)
        start = time.perf_counter()
        opt.step()
        total += (time.perf_counter() - start) if k else 0.0  # step 0: warm-up
    return total / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("classes", nargs="+", help="dotted names, e.g. torch.optim.Rprop")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, 8 params per shape, mean of {args.steps} steps")
    print("| class | shape | path | original ms | R ms | ratio |\n|---|---|---|---|---|---|")
    for dotted in args.classes:
        module, _, name = dotted.rpartition(".")
        original = getattr(importlib.import_module(module), name)
        reduced = gsr_rewrite.reduce(original)
        for shape in SHAPES:
            for foreach in (False, True):
                a = step_seconds(original, shape, foreach, args.steps)
                b = step_seconds(reduced, shape, foreach, args.steps)
                print(f"| {name} | {'x'.join(map(str, shape))} | "
                      f"{'foreach' if foreach else 'loop'} | {a * 1e3:.1f} | {b * 1e3:.1f} | "
                      f"{b / a:.2f} |")


if __name__ == "__main__":
    main()
