"""NeuS SDF -> alpha with a learnable sharpness ``inv_s = exp(10 v)``.

For sample i with SDF ``s_i``, interval ``delta_i`` and slope ``k_i = ds/dt`` along the ray:
``s_prev = s_i - k_i delta_i / 2``, ``s_next = s_i + k_i delta_i / 2`` and
``alpha_i = clip((Phi(s_prev inv_s) - Phi(s_next inv_s) + 1e-5) / (Phi(s_prev inv_s) + 1e-5), 0, 1)``
with the logistic sigmoid ``Phi`` (NeuS; SelfOcc's sdfstudio ``get_alpha``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ALPHA_EPS = 1e-5


class Sharpness(nn.Module):
    """Learnable NeuS sharpness: parameter ``v``, ``inv_s = min_inv_s + exp(10 v)`` (v0 = 0.1 -> 2.72,
    0.3 -> 20.1, plus the floor).

    ``min_inv_s`` (default 0, plain NeuS) keeps a floor under the sharpness with the gradient intact:
    the photometric and RGB terms can lower a free sharpness without bound (a blurrier volume
    averages colours), which turns the SDF into a soft density and breaks thresholding it."""

    def __init__(self, init: float = 0.1, min_inv_s: float = 0.0) -> None:
        super().__init__()
        if min_inv_s < 0:
            raise ValueError(f"min_inv_s must be >= 0, got {min_inv_s}")
        self.v = nn.Parameter(torch.tensor(float(init)))
        self.min_inv_s = float(min_inv_s)

    def forward(self) -> torch.Tensor:
        return torch.exp(10.0 * self.v) + self.min_inv_s


def annealed_slope(cos: torch.Tensor, anneal: float = 1.0) -> torch.Tensor:
    """NeuS cos-annealing of the ray/normal cosine: ``-(relu(-cos/2 + 1/2) (1 - a) + relu(-cos) a)``.

    ``a`` ramps 0 -> 1 during training (SelfOcc: over 5000 iterations); at ``a = 1`` only surfaces the ray
    enters (negative slope) produce alpha.
    """
    return -(F.relu(-cos * 0.5 + 0.5) * (1.0 - anneal) + F.relu(-cos) * anneal)


def slope_along_ray(sdf: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Finite-difference ``ds/dt`` at every sample ``(..., S)`` (central inside, one-sided at the ends).

    Avoids needing SDF gradients (normals) at the samples; for a planar SDF it is the exact cosine.
    """
    if sdf.shape[-1] < 2:
        return torch.zeros_like(sdf)
    ds = sdf[..., 1:] - sdf[..., :-1]
    dt = (t[..., 1:] - t[..., :-1]).clamp_min(1e-6)
    fwd = ds / dt                                               # (..., S-1) slope of each gap
    first, last = fwd[..., :1], fwd[..., -1:]
    mid = 0.5 * (fwd[..., 1:] + fwd[..., :-1])
    return torch.cat([first, mid, last], -1)


def section_sdf(sdf: torch.Tensor, deltas: torch.Tensor, slope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s_prev, s_next)``: SDF estimates at the start and end of each sample's interval."""
    half = slope * deltas * 0.5
    return sdf - half, sdf + half


def neus_alpha(s_prev: torch.Tensor, s_next: torch.Tensor, inv_s: torch.Tensor | float) -> torch.Tensor:
    """NeuS discrete opacity from interval-end SDFs ``(..., S)`` (reference implementation)."""
    cdf_prev = torch.sigmoid(s_prev * inv_s)
    cdf_next = torch.sigmoid(s_next * inv_s)
    return ((cdf_prev - cdf_next + ALPHA_EPS) / (cdf_prev + ALPHA_EPS)).clamp(0.0, 1.0)
