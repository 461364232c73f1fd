import torch
from torch.optim import Optimizer


class NudgeByAll(Optimizer):
    """Must not fire: `nudge`, defined before the loop, reads every parameter's gradient through
    its free variable `grads` on each iteration, so the loop is not per-parameter and the
    gradient of an earlier parameter is still needed when a later one is updated."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            grads = []
            for p in group["params"]:
                if p.grad is not None:
                    grads.append(p.grad)

            def nudge(param):
                for g in grads:
                    param.sub_(g.sum(), alpha=0.001)

            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["v"] = torch.ones_like(p)
                nudge(p)
                update = state["v"].sqrt()
                p.sub_(update, alpha=group["lr"])
