"""Cost of the run-time precondition (`runtime.distinct_buffers`) against the step it guards.

    python benchmarks/precondition_cost.py

For 152 tensors (ViT-B/32's count, small shapes here) and 2,000 tensors of 64x64 fp32: the time
of one shipped `AdamWR` foreach step (which includes the check), the check alone with its cached
verdict (the steady state: the same grads, or new grads at the same addresses), and the check
recomputed (new addresses every step), as medians of interleaved repetitions in one process, one
thread. Prints one line per size; the ratios are what to compare (timings on shared machines
are noisy).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from gsr_rewrite import runtime
from gsr_rewrite.optim.adamw import AdamWR  # the reference AdamW (the README figures)
from gsr_rewrite.runtime import precondition


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU, one thread")
    for count in (152, 2000):
        params = [torch.nn.Parameter(torch.randn(64, 64)) for _ in range(count)]
        for p in params:
            p.grad = torch.randn(64, 64)
        opt = AdamWR(params, foreach=True)
        opt.step()  # state exists from here on

        def recompute(opt: torch.optim.Optimizer = opt) -> bool:
            precondition._VERDICTS.pop(opt, None)
            return runtime.distinct_buffers(opt)

        def cached_check(opt: torch.optim.Optimizer = opt) -> bool:
            return runtime.distinct_buffers(opt)

        step, cached, fresh = [], [], []
        for _ in range(7):  # interleaved, so load changes hit all three alike
            step.append(_median_ms(opt.step, 3))
            cached.append(_median_ms(cached_check, 5))
            fresh.append(_median_ms(recompute, 5))
        s, c, f = (statistics.median(x) for x in (step, cached, fresh))
        print(f"{count:5d} tensors: step {s:7.2f} ms; check, cached verdict {c:5.2f} ms "
              f"({100 * c / s:4.1f} % of the step); recomputed {f:5.2f} ms "
              f"({100 * f / s:4.1f} %)")


if __name__ == "__main__":
    main()
