"""Small builders several test modules share (imported by name, like stub_engine)."""

from __future__ import annotations

import numpy as np


def randomised_model(cfg, seed: int = 0):
    """``build_model(cfg)`` with every weight nudged by N(0, 0.05): an untrained network whose outputs
    are not constant (so parity and plumbing tests compare real numbers), reproducible from ``seed``."""
    import torch

    from mv4d_core.models import build_model

    torch.manual_seed(seed)
    model = build_model(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def box_surface(rng: np.random.Generator, n: int, lo, hi) -> np.ndarray:
    """``n`` points on the faces of an axis-aligned box (LiDAR returns lie on surfaces)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    p = rng.uniform(lo, hi, (n, 3))
    axis, side = rng.integers(0, 3, n), rng.integers(0, 2, n)
    p[np.arange(n), axis] = np.where(side == 1, hi[axis], lo[axis])
    return p
