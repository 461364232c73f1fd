"""R / original step time of one optimizer class on 2,000 params of 64x64, for A/B runs of two
checkouts of gsr-rewrite (the same class timed by each, alternating processes):

    python benchmarks/step_ratio.py CLASS PATH [REPS]

CLASS is dotted (`torch.optim.AdamW`, `gsr_rewrite.optim.adan.Adan`: the shipped R-variant of a
`gsr_rewrite.optim` reference class, else `gsr_rewrite.reduce(CLASS)`); PATH is `loop` or
`foreach`. One CPU thread; the original and R stepped in alternating order, grads refreshed in
place before every step, outside the timing; medians of REPS (default 31) steps after 2. Prints
one line. For an A/B of commit OLD, put a worktree of it first on PYTHONPATH (and give it its own
GSR_REWRITE_CACHE_DIR) and run this file from the new checkout, in turn.
"""

from __future__ import annotations

import importlib
import statistics
import sys
import time

import torch

import gsr_rewrite


def main() -> None:
    name, path = sys.argv[1], sys.argv[2]
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 31
    torch.set_num_threads(1)
    module, _, cls = name.rpartition(".")
    original = getattr(importlib.import_module(module), cls)
    reduced = getattr(importlib.import_module(module), cls + "R") \
        if module.startswith("gsr_rewrite.optim") else gsr_rewrite.reduce(original)

    def make(c: type) -> torch.optim.Optimizer:
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(64, 64)) for _ in range(2000)]
        for p in params:
            p.grad = torch.randn(64, 64)
        opt = c(params, foreach=path == "foreach")
        opt.step()
        opt.step()
        return opt

    opts = {"original": make(original), "R": make(reduced)}
    times: dict[str, list[float]] = {k: [] for k in opts}
    for rep in range(reps):
        for key, opt in (list(opts.items()) if rep % 2 else list(reversed(opts.items()))):
            for p in opt.param_groups[0]["params"]:
                p.grad.normal_()
            began = time.perf_counter()
            opt.step()
            times[key].append(time.perf_counter() - began)
    o, r = (statistics.median(times[k]) for k in ("original", "R"))
    print(f"{name} {path}: original {o * 1e3:.1f} ms, R {r * 1e3:.1f} ms, R / original "
          f"{r / o:.3f} (gsr-rewrite at {gsr_rewrite.__file__})")


if __name__ == "__main__":
    main()
