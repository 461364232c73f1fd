"""Registers a step post-hook in `__init__` (`self.register_step_post_hook(...)`) that logs
per-parameter gradient RMS onto self after every step: torch runs it after step() returns."""
import torch
from torch.optim import Optimizer

# its gradient or state items are read inside a run of per-element statements, read once before
# it now (transform/stripmine/hoist.py): the run is strip-mined and writes into no gradient
EXPECT = "rewritten"


def _log_grad_rms(opt, args, kwargs):
    rms = []
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is not None and p.grad.numel():
                rms.append(p.grad.pow(2).mean().sqrt().item())
    opt.grad_rms_log.append(rms)


class HookedAdagrad(Optimizer):
    def __init__(self, params, lr=1e-2, eps=1e-10):
        super().__init__(params, dict(lr=lr, eps=eps))
        self.grad_rms_log = []
        self.register_step_post_hook(_log_grad_rms)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.zeros_like(p)
                state["sum"].addcmul_(grad, grad, value=1)
                std = state["sum"].sqrt().add_(group["eps"])
                p.addcdiv_(grad, std, value=-group["lr"])
