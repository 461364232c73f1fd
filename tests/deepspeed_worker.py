"""CPU ranks (gloo) train a small MLP under DeepSpeed ZeRO stage 2, once with torch's AdamW and
once with `gsr_rewrite.install()` on a torch AdamW, and write what each rank saw as JSON (used by
tests/runtime/test_deepspeed_stack.py).

    DS_ACCELERATOR=cpu python tests/deepspeed_worker.py deepspeed WORLD OUT.json

No `zero_allow_untested_optimizer`: DeepSpeed accepts the installed optimizer because its type is
still `torch.optim.AdamW`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import types
from pathlib import Path
from typing import Any

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

STEPS = 4
CONFIG: dict[str, Any] = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1,
                          "zero_optimization": {"stage": 2}, "gradient_clipping": 1.0}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(),
                               torch.nn.Linear(128, 128), torch.nn.GELU(),
                               torch.nn.Linear(128, 8))


def _measured_step(opt: torch.optim.Optimizer) -> list[int]:
    """Make the next `opt.step()` (called by DeepSpeed) measure its own temporaries; the peak
    bytes land in the returned list and `opt.step` is restored."""
    from gsr_rewrite.proof.memory import measure_step_peak_bytes

    had = "step" in vars(opt)
    real = opt.step
    box: list[int] = []

    def measured(*args: Any, **kwargs: Any) -> None:
        assert not args and not kwargs, (args, kwargs)
        if had:
            opt.step = real  # type: ignore[method-assign]
        else:
            del opt.step
        box.append(measure_step_peak_bytes(
            types.SimpleNamespace(param_groups=opt.param_groups, step=real)))  # type: ignore[arg-type]

    opt.step = measured  # type: ignore[method-assign]
    return box


def _train(rank: int, foreach: bool, installed: bool) -> dict[str, Any]:
    import deepspeed

    from gsr_rewrite import install, runtime
    from gsr_rewrite.runtime import precondition

    model = _model()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}], lr=1e-2, foreach=foreach)
    if installed:
        opt = install(opt)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))  # after install
    engine, zero, _, _ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched,
                                              config=CONFIG)
    gen = torch.Generator().manual_seed(100 + rank)
    hits, falls = runtime.GUARD_HITS[0], precondition._FALLBACKS[0]
    box: list[int] = []
    for step in range(STEPS):
        x, y = torch.randn(4, 64, generator=gen), torch.randn(4, 8, generator=gen)
        engine.backward(torch.nn.functional.mse_loss(engine(x), y))
        if step == STEPS - 1:
            box = _measured_step(opt)
        engine.step()
    flat = [p for g in opt.param_groups for p in g["params"]]
    return {"params": [p.detach().clone() for p in model.parameters()],
            "guard_hits": runtime.GUARD_HITS[0] - hits,
            "fallbacks": precondition._FALLBACKS[0] - falls,
            "units": box[0] / sum(p.numel() * p.element_size() for p in flat),
            "zero": type(zero).__name__, "stage": engine.zero_optimization_stage(),
            "untested_allowed": engine.zero_allow_untested_optimizer(),
            "wraps_ours": zero.optimizer is opt, "type": type(opt).__qualname__,
            "flat": [list(p.shape) for p in flat], "lr": opt.param_groups[0]["lr"]}


def _rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import deepspeed

    # DeepSpeed's CPU backend JIT-compiles a shared-memory allreduce (about 1-2 min with a C++
    # compiler, once per machine); gloo does the collectives without it
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="gloo")
    seen: dict[str, Any] = {}
    for foreach in (False, True):
        path = "foreach" if foreach else "loop"
        # installed first, as a user would: `reduce(torch.optim.AdamW)` is refused once
        # torch._dynamo's TorchPatcher has run (DeepSpeed's initialize runs it): it sets
        # `AdamW._init_group = disable(Adam._init_group)`, and `api.step_owner` then no longer
        # sees that AdamW runs Adam's step
        r = _train(rank, foreach, installed=True)
        o = _train(rank, foreach, installed=False)
        seen[path] = {
            "bitwise": all(torch.equal(a, b) for a, b in zip(o["params"], r["params"],
                                                             strict=True)),
            "moved": not all(torch.equal(a, b) for a, b in zip(
                o["params"], _model().parameters(), strict=True)),
            **{f"original_{k}": v for k, v in o.items() if k != "params"},
            **{f"r_{k}": v for k, v in r.items() if k != "params"}}
    Path(f"{out}.{rank}").write_text(json.dumps(seen))
    # gloo's threads must stop before the process exits: exiting with them alive aborted a rank
    # once under load ("terminate called without an active exception", SIGABRT)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def main() -> None:
    stack, world, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    assert stack == "deepspeed", stack
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(world, port, out), nprocs=world)
    ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(world)]
    Path(out).write_text(json.dumps(ranks, indent=1))


if __name__ == "__main__":
    main()
