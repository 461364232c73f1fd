"""Lookahead (Zhang et al.) as a wrapper Optimizer holding an inner optimizer: `step` calls
`self.optimizer.step()` then pulls slow weights (`slow.add_(p - slow, alpha)`) every k steps."""
from collections import defaultdict

import torch
from torch.optim import Optimizer

EXPECT = "refused"
GROUP2 = {"lr": 0.025}


def build(cls, param_groups, **kwargs):
    inner = torch.optim.SGD(param_groups, lr=0.05, momentum=0.9)
    return cls(inner, **kwargs)


class Lookahead(Optimizer):
    def __init__(self, optimizer, k=3, alpha=0.5):
        self.optimizer = optimizer
        self.k = k
        self.alpha = alpha
        self.param_groups = self.optimizer.param_groups
        self.state = defaultdict(dict)
        self.fast_state = self.optimizer.state
        self.defaults = dict(k=k, alpha=alpha)
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}
        for group in self.param_groups:
            group["counter"] = 0

    def update(self, group):
        for fast in group["params"]:
            param_state = self.state[fast]
            if "slow_param" not in param_state:
                param_state["slow_param"] = torch.zeros_like(fast.data)
                param_state["slow_param"].copy_(fast.data)
            slow = param_state["slow_param"]
            slow += (fast.data - slow) * self.alpha
            fast.data.copy_(slow)

    def step(self, closure=None):
        loss = self.optimizer.step(closure)
        for group in self.param_groups:
            if group["counter"] == 0:
                self.update(group)
            group["counter"] += 1
            if group["counter"] >= self.k:
                group["counter"] = 0
        return loss
