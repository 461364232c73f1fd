"""Rprop-like sign rule with masks: `sign = grad.mul(state['prev']).sign()`, masked fills
`step_size[sign.gt(0)] = ...`, `grad = grad.clone(); grad[sign.eq(-1)] = 0`, prev copied."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class RpropMasks(Optimizer):
    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0)):
        super().__init__(params, dict(lr=lr, etas=etas, step_sizes=step_sizes))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            etaminus, etaplus = group["etas"]
            step_size_min, step_size_max = group["step_sizes"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["prev"] = torch.zeros_like(p)
                    state["step_size"] = torch.full_like(grad, group["lr"])
                state["step"] += 1
                step_size = state["step_size"]
                sign = grad.mul(state["prev"]).sign()
                sign[sign.gt(0)] = etaplus
                sign[sign.lt(0)] = etaminus
                sign[sign.eq(0)] = 1
                step_size.mul_(sign).clamp_(step_size_min, step_size_max)
                grad = grad.clone(memory_format=torch.preserve_format)
                grad[sign.eq(etaminus)] = 0
                p.addcmul_(grad.sign(), step_size, value=-1)
                state["prev"].copy_(grad)
