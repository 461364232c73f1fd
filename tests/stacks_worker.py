"""Two CPU ranks (gloo) train a small MLP with an original optimizer and its R-variant on a real
distributed engine, and write what they saw as JSON (used by tests/runtime/test_stacks.py).

    python tests/stacks_worker.py STACK FOREACH OUT.json    STACK: fsdp2 | ddp
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
STEPS = 4


def _pairs() -> dict[str, tuple[type, type, dict[str, Any]]]:
    from gsr_rewrite.optim import AdamW, AdamWR, Adan, AdanR, Lion, LionR

    return {"AdamW": (AdamW, AdamWR, {"lr": 1e-2, "weight_decay": 0.1}),
            "Adan": (Adan, AdanR, {"lr": 1e-2, "weight_decay": 0.02}),
            "Lion": (Lion, LionR, {"lr": 1e-3, "weight_decay": 0.1})}


def _model(stack: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(),
                                torch.nn.Linear(128, 128), torch.nn.GELU(),
                                torch.nn.Linear(128, 8))
    if stack == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer)
        fully_shard(model)
        return model
    return torch.nn.parallel.DistributedDataParallel(model, gradient_as_bucket_view=True)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _train(stack: str, cls: type, kwargs: dict[str, Any], foreach: bool,
           rank: int) -> tuple[list[torch.Tensor], int, int]:
    """STEPS steps; the last one measured: (local params after, peak bytes of the last step,
    bytes of the local params)."""
    from gsr_rewrite.proof.memory import measure_step_peak_bytes

    model = _model(stack)
    opt = cls(model.parameters(), foreach=foreach, **kwargs)
    gen = torch.Generator().manual_seed(100 + rank)
    peak = 0
    for step in range(STEPS):
        x = torch.randn(16, 64, generator=gen)
        model(x).square().mean().backward()
        if step == STEPS - 1:
            peak = measure_step_peak_bytes(opt)
        else:
            opt.step()
        opt.zero_grad()
    params = [_local(p).detach().clone() for p in model.parameters()]
    return params, peak, sum(p.numel() * p.element_size() for p in params)


def _rank(rank: int, stack: str, foreach: bool, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    from gsr_rewrite import runtime
    from gsr_rewrite.runtime import precondition

    report: dict[str, Any] = {}
    if stack == "fsdp2":  # the aliasing guard sees a DTensor's local storage
        param = next(iter(_model(stack).parameters())).detach()
        from torch.distributed.tensor import Replicate

        replicated = param.redistribute(param.device_mesh, [Replicate()])
        report["guards"] = {"fits_own_view": runtime.fits((param,), (param.view(param.shape),)),
                            "fits_other": runtime.fits((param,), (param.clone(),)),
                            "fits_other_placement": runtime.fits((param,), (replicated,))}
    for name, (orig, rvar, kwargs) in _pairs().items():
        try:
            ref, orig_peak, param_bytes = _train(stack, orig, kwargs, foreach, rank)
        except Exception as e:  # the original itself cannot run here: the R-variant neither
            try:
                _train(stack, rvar, kwargs, foreach, rank)
                r_error = ""
            except Exception as r_e:
                r_error = type(r_e).__name__
            report[name] = {"original_error": f"{type(e).__name__}: {str(e)[:200]}",
                            "r_error": r_error}
            continue
        hits, fallbacks = runtime.GUARD_HITS[0], precondition._FALLBACKS[0]
        got, r_peak, _ = _train(stack, rvar, kwargs, foreach, rank)
        report[name] = {
            "max_abs_diff": max(float((a - b).abs().max()) for a, b in
                                zip(ref, got, strict=True)),
            "bitwise": all(torch.equal(a, b) for a, b in zip(ref, got, strict=True)),
            "guard_hits": runtime.GUARD_HITS[0] - hits,
            "fallbacks": precondition._FALLBACKS[0] - fallbacks,
            "original_units": orig_peak / param_bytes, "r_units": r_peak / param_bytes,
            "param_type": type(next(iter(_model(stack).parameters()))).__name__,
        }
    Path(f"{out}.{rank}").write_text(json.dumps(report))
    dist.destroy_process_group()


def main() -> None:
    stack, foreach, out = sys.argv[1], sys.argv[2] == "foreach", sys.argv[3]
    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(stack, foreach, port, out), nprocs=WORLD)
    Path(out).write_text(json.dumps([json.loads(Path(f"{out}.{r}").read_text())
                                     for r in range(WORLD)], indent=1))


if __name__ == "__main__":
    main()
