"""SSIM over images or ray lattices (monodepth2 / SelfOcc form: 3x3 mean window, reflection padding).

Works on any ``(B, C, H, W)`` tensor whose ``H x W`` neighbours are spatial neighbours, which is
why rays are cast on a (jittered) lattice: ``(N_cam, h, w)`` rays -> ``(N_cam, 3, h, w)`` colours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Stabilisers for images in [0, 1] (Wang et al. with K1 = 0.01, K2 = 0.03, L = 1).
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 3) -> torch.Tensor:
    """Per-pixel SSIM ``(B, C, H, W)`` of two ``(B, C, H, W)`` images in [0, 1].

    Local statistics use a ``window x window`` box filter with reflection padding, so the
    output keeps the input size (needs ``H, W >= 2``). Identical inputs give exactly 1.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    pad = window // 2
    xp = F.pad(x, (pad,) * 4, mode="reflect")
    yp = F.pad(y, (pad,) * 4, mode="reflect")
    pool = lambda t: F.avg_pool2d(t, window, 1)  # noqa: E731
    mu_x, mu_y = pool(xp), pool(yp)
    sigma_x = pool(xp * xp) - mu_x**2
    sigma_y = pool(yp * yp) - mu_y**2
    sigma_xy = pool(xp * yp) - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    den = (mu_x**2 + mu_y**2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return num / den


def ssim_dissimilarity(x: torch.Tensor, y: torch.Tensor, window: int = 3) -> torch.Tensor:
    """``clamp((1 - SSIM) / 2, 0, 1)`` per pixel ``(B, C, H, W)``: 0 for identical images."""
    return torch.clamp((1 - ssim_map(x, y, window)) / 2, 0, 1)


class SSIM(nn.Module):
    """Module form of :func:`ssim_dissimilarity` (returns the per-pixel map, not a scalar)."""

    def __init__(self, window: int = 3):
        super().__init__()
        self.window = window

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ssim_dissimilarity(x, y, self.window)
