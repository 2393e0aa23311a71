"""Learning-rate schedules that scale every parameter group by the same factor.

Each factory takes ``(optimizer, total_steps)``; the classifier supplies ``total_steps`` from the
trainer, so a config only chooses the shape. Scaling by a factor keeps the ratio between the
backbone's and the head's learning rates fixed.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _cosine(progress: float, floor: float) -> float:
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.1, floor: float = 0.01
) -> LambdaLR:
    """Linear warm-up over ``warmup_fraction`` of training, then cosine decay to ``floor``."""
    warmup_steps = max(1, round(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return _cosine((step - warmup_steps) / max(1, total_steps - warmup_steps), floor)

    return LambdaLR(optimizer, factor)


def one_cycle(
    optimizer: Optimizer, total_steps: int, pct_start: float = 0.3, div_factor: float = 25.0
) -> LambdaLR:
    """One-cycle shape: cosine rise from ``1/div_factor`` to 1, then cosine decay towards 0."""
    peak = max(1, round(total_steps * pct_start))
    start = 1.0 / div_factor

    def factor(step: int) -> float:
        if step < peak:
            return start + (1.0 - start) * 0.5 * (1.0 - math.cos(math.pi * step / peak))
        return _cosine((step - peak) / max(1, total_steps - peak), 1e-4)

    return LambdaLR(optimizer, factor)
