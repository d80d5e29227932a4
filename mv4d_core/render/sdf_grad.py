"""Finite-difference SDF derivatives on the voxel grid (inputs of the Eikonal / Hessian regularisers).

Central differences with replicate padding (SelfOcc): ``ds/dx ~ (s[i+1] - s[i-1]) / 2h`` and
``d2s/dx2 ~ (s[i+1] - 2 s[i] + s[i-1]) / h^2``. Everything is first-order autograd of plain tensor ops,
so losses on these need no double backward through ``grid_sample``. At the border the replicate
padding halves the first difference and zeroes the one-sided second difference.
Sample them at continuous points with :func:`mv4d_core.render.field.sample_volume`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _padded(sdf: torch.Tensor) -> torch.Tensor:
    if sdf.ndim == 4:
        sdf = sdf.unsqueeze(1)
    if sdf.ndim != 5 or sdf.shape[1] != 1:
        raise ValueError(f"sdf must be (B, X, Y, Z) or (B, 1, X, Y, Z), got {tuple(sdf.shape)}")
    return F.pad(sdf, (1, 1, 1, 1, 1, 1), mode="replicate")


def sdf_gradient(sdf: torch.Tensor, voxel_size) -> torch.Tensor:
    """``(B, X, Y, Z)`` SDF (m) -> ``(B, 3, X, Y, Z)`` gradient (dimensionless; base_link axes)."""
    p = _padded(sdf)
    hx, hy, hz = (float(v) for v in voxel_size)
    gx = (p[:, :, 2:, 1:-1, 1:-1] - p[:, :, :-2, 1:-1, 1:-1]) / (2 * hx)
    gy = (p[:, :, 1:-1, 2:, 1:-1] - p[:, :, 1:-1, :-2, 1:-1]) / (2 * hy)
    gz = (p[:, :, 1:-1, 1:-1, 2:] - p[:, :, 1:-1, 1:-1, :-2]) / (2 * hz)
    return torch.cat([gx, gy, gz], 1)


def sdf_second_derivatives(sdf: torch.Tensor, voxel_size) -> torch.Tensor:
    """``(B, X, Y, Z)`` SDF -> ``(B, 3, X, Y, Z)`` diagonal Hessian ``(d2s/dx2, d2s/dy2, d2s/dz2)`` in 1/m."""
    p = _padded(sdf)
    c = p[:, :, 1:-1, 1:-1, 1:-1]
    hx, hy, hz = (float(v) for v in voxel_size)
    dxx = (p[:, :, 2:, 1:-1, 1:-1] - 2 * c + p[:, :, :-2, 1:-1, 1:-1]) / hx ** 2
    dyy = (p[:, :, 1:-1, 2:, 1:-1] - 2 * c + p[:, :, 1:-1, :-2, 1:-1]) / hy ** 2
    dzz = (p[:, :, 1:-1, 1:-1, 2:] - 2 * c + p[:, :, 1:-1, 1:-1, :-2]) / hz ** 2
    return torch.cat([dxx, dyy, dzz], 1)


def eikonal_residual(sdf: torch.Tensor, voxel_size) -> torch.Tensor:
    """``(B, X, Y, Z)``: ``||grad s|| - 1`` per voxel (the Eikonal loss is the mean of its square)."""
    g = sdf_gradient(sdf, voxel_size)
    return torch.sqrt((g * g).sum(1) + 1e-12) - 1.0
