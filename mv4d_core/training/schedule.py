"""Learning-rate schedule (linear warm-up, cosine decay) and an exponential moving average of weights."""

from __future__ import annotations

import copy
import math

import torch


def cosine_lr(step: int, base_lr: float, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.01) -> float:
    """LR at optimizer ``step`` (0-based): linear warm-up to ``base_lr``, then cosine to ``min_ratio * base_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class ModelEMA:
    """Shadow copy of a model whose weights track ``decay * ema + (1 - decay) * model`` after each step."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        src = model.state_dict()
        for name, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(self.decay).add_(src[name].detach(), alpha=1 - self.decay)
            else:
                v.copy_(src[name])

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
