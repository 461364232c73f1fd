"""SAM without a closure: `step()` alternates ascent and descent by a phase flag on self; the
ascent stores `e_w = grad * scale` (a fresh temporary) in state and restores it next call."""
import torch
from torch.optim import Optimizer

EXPECT = "rewritten"  # the dangerous construct is respected; other temporaries move


class PhasedSAM(Optimizer):
    def __init__(self, params, lr=0.05, rho=0.05, eps=1e-12):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps))
        self.ascent = True

    @torch.no_grad()
    def step(self, closure=None):
        if self.ascent:
            norms = [p.grad.norm() for g in self.param_groups for p in g["params"]
                     if p.grad is not None]
            gnorm = torch.stack(norms).norm() if norms else torch.zeros(())
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    e_w = p.grad * (group["rho"] / (gnorm + group["eps"]))
                    p.add_(e_w)
                    self.state[p]["e_w"] = e_w
        else:
            for group in self.param_groups:
                for p in group["params"]:
                    st = self.state[p]
                    if "e_w" in st:
                        p.sub_(st.pop("e_w"))
                    if p.grad is None:
                        continue
                    update = p.grad.sign() * p.grad.abs().sqrt()
                    p.add_(update, alpha=-group["lr"])
        self.ascent = not self.ascent
