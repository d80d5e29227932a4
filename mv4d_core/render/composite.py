"""Transmittance compositing (reference): weights ``w_i = alpha_i prod_{j<i} (1 - alpha_j + eps)``.

The ``eps = 1e-10`` inside the product (standard NeRF practice) keeps transmittance strictly positive,
which also makes the hand-written backward of the fused op exact (it divides by ``1 - alpha + eps``).
"""

from __future__ import annotations

import torch

TRANSMITTANCE_EPS = 1e-10


def transmittance(alpha: torch.Tensor) -> torch.Tensor:
    """``(..., S)`` alpha -> ``(..., S)`` transmittance before each sample."""
    ones = torch.ones_like(alpha[..., :1])
    return torch.cumprod(torch.cat([ones, 1.0 - alpha + TRANSMITTANCE_EPS], -1), -1)[..., :-1]


def composite(alpha: torch.Tensor, t: torch.Tensor, values: torch.Tensor | None = None):
    """Composite samples along rays.

    ``alpha`` (..., S), ranges ``t`` (..., S) metres, ``values`` (..., S, C) or None ->
    ``(weights (..., S), depth_t (...), values (..., C) or None, opacity (...))``; ``depth_t`` is
    ``sum w t`` (range, not normalised by opacity).
    """
    weights = alpha * transmittance(alpha)
    depth_t = (weights * t).sum(-1)
    out_vals = (weights[..., None] * values).sum(-2) if values is not None else None
    return weights, depth_t, out_vals, weights.sum(-1)
