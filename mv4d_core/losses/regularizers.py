"""Regularisers: Eikonal / Hessian on the SDF grid, edge-aware depth smoothness, flow priors.

Finite differences on the voxel SDF (SelfOcc ``sample_gradient``) avoid double backward
through ``grid_sample``. Volumes are ``(B, X, Y, Z)`` (or ``(B, 1, X, Y, Z)``) with voxel edges
``voxel_size_m`` ``(vx, vy, vz)`` in metres; flow volumes are ``(B, 3, X, Y, Z)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mv4d_core.losses.base import WeightedLoss
from mv4d_core.render.sdf_grad import eikonal_residual, sdf_second_derivatives


def _as_bxyz(sdf: torch.Tensor) -> torch.Tensor:
    if sdf.dim() == 5 and sdf.shape[1] == 1:
        sdf = sdf[:, 0]
    if sdf.dim() != 4:
        raise ValueError(f"sdf must be (B, X, Y, Z) or (B, 1, X, Y, Z), got {tuple(sdf.shape)}")
    return sdf


def _spacing(voxel_size_m) -> tuple[float, float, float]:
    if isinstance(voxel_size_m, (int, float)):
        return (float(voxel_size_m),) * 3
    vs = tuple(float(v) for v in voxel_size_m)
    if len(vs) != 3:
        raise ValueError(f"voxel_size_m needs 1 or 3 values, got {voxel_size_m}")
    return vs


def interior_mask(shape: Sequence[int], device=None) -> torch.Tensor:
    """``(B, X, Y, Z)`` bool, False on the outer faces of every axis with >= 3 voxels: there the
    replicate padding of :mod:`mv4d_core.render.sdf_grad` biases the differences (halves the
    gradient of a linear field), so the Eikonal / Hessian terms leave those voxels out."""
    m = torch.ones(tuple(shape), dtype=torch.bool, device=device)
    for axis in (1, 2, 3):
        n = shape[axis]
        if n >= 3:
            m.narrow(axis, 0, 1).fill_(False)
            m.narrow(axis, n - 1, 1).fill_(False)
    return m


def _masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.mean()
    m = mask.to(torch.bool).expand_as(x)
    return x[m].mean() if m.any() else (x * 0).sum()


def _with_interior(sdf: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    inner = interior_mask(sdf.shape, sdf.device)
    return inner if mask is None else inner & mask.to(torch.bool).reshape(sdf.shape)


class EikonalLoss(WeightedLoss):
    """``mean (|grad s| - 1)^2`` from finite differences of the SDF grid (``render.sdf_grad``).

    ``forward(sdf (B, X, Y, Z), mask (B, X, Y, Z) bool | None)``; ``voxel_size_m`` fixed at
    construction. Mean over interior voxels (and ``mask``). Zero for an exact plane SDF.
    """

    default_reads = {"sdf": "sdf", "mask": "sdf_mask"}
    optional_reads = frozenset({"mask"})

    def __init__(self, weight: float = 0.1, enable_after: int = 0, reads=None, *,
                 voxel_size_m: float | Sequence[float] = 0.8):
        super().__init__(weight, enable_after, reads)
        self.voxel_size_m = _spacing(voxel_size_m)

    def forward(self, sdf: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        sdf = _as_bxyz(sdf)
        return _masked_mean(eikonal_residual(sdf, self.voxel_size_m) ** 2, _with_interior(sdf, mask))


class HessianLoss(WeightedLoss):
    """SelfOcc ``SecondGradLoss``: mean over interior voxels and axes of ``|d2s/dxi2|``.

    ``forward(sdf (B, X, Y, Z), mask (B, X, Y, Z) bool | None)``. Zero for any linear field.
    """

    default_reads = {"sdf": "sdf", "mask": "sdf_mask"}
    optional_reads = frozenset({"mask"})

    def __init__(self, weight: float = 0.01, enable_after: int = 0, reads=None, *,
                 voxel_size_m: float | Sequence[float] = 0.8):
        super().__init__(weight, enable_after, reads)
        self.voxel_size_m = _spacing(voxel_size_m)

    def forward(self, sdf: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        sdf = _as_bxyz(sdf)
        h = sdf_second_derivatives(sdf, self.voxel_size_m).abs().mean(1)
        return _masked_mean(h, _with_interior(sdf, mask))


def edge_aware_smoothness(depth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """monodepth2 smoothness on mean-normalised depth.

    ``depth`` ``(V, h, w)`` or ``(V, 1, h, w)``, ``image`` ``(V, 3, h, w)``:
    ``mean |dx d̄| exp(-mean_c |dx I|) + mean |dy d̄| exp(-mean_c |dy I|)``, ``d̄ = d / mean(d)``
    per view.
    """
    if depth.dim() == 3:
        depth = depth[:, None]
    if depth.dim() != 4 or image.dim() != 4 or depth.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"depth (V, h, w) and image (V, 3, h, w) must share h, w; got "
                         f"{tuple(depth.shape)} and {tuple(image.shape)}")
    d = depth / depth.mean((2, 3), keepdim=True).clamp_min(1e-7)
    dx = (d[..., :, 1:] - d[..., :, :-1]).abs()
    dy = (d[..., 1:, :] - d[..., :-1, :]).abs()
    ix = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    iy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    return (dx * torch.exp(-ix)).mean() + (dy * torch.exp(-iy)).mean()


class EdgeAwareSmoothnessLoss(WeightedLoss):
    """SelfOcc ``EdgeLoss3DMS``: ``forward(depth (V, h, w), image)`` -> :func:`edge_aware_smoothness`
    (depth on the ray lattice or a depth map). ``image`` is ``(V, h, w, 3)`` like the ray
    lattice colours when ``channels_last`` (default), else ``(V, 3, h, w)``."""

    default_reads = {"depth": "ray_depth_m", "image": "ray_rgb"}

    def __init__(self, weight: float = 0.01, enable_after: int = 0, reads=None, *, channels_last: bool = True):
        super().__init__(weight, enable_after, reads)
        self.channels_last = channels_last

    def forward(self, depth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            image = image.permute(0, 3, 1, 2)
        return edge_aware_smoothness(depth, image)


def flow_total_variation(flow: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """3D TV (L1) of a ``(B, C, X, Y, Z)`` field: mean over the three axes of ``|f[i+1] - f[i]|``.

    With ``mask`` ``(B, X, Y, Z)`` only differences between two masked voxels count.
    """
    if flow.dim() != 5:
        raise ValueError(f"flow must be (B, C, X, Y, Z), got {tuple(flow.shape)}")
    terms = []
    for axis in (2, 3, 4):
        n = flow.shape[axis]
        if n < 2:
            continue
        diff = (flow.narrow(axis, 1, n - 1) - flow.narrow(axis, 0, n - 1)).abs()
        if mask is None:
            terms.append(diff.mean())
        else:
            m = mask.bool()[:, None]
            pair = m.narrow(axis, 1, n - 1) & m.narrow(axis, 0, n - 1)
            terms.append(_masked_mean(diff, pair))
    return torch.stack(terms).mean() if terms else (flow * 0).sum()


class FlowSmoothnessLoss(WeightedLoss):
    """``forward(flow (B, 3, X, Y, Z), mask (B, X, Y, Z) | None)`` -> :func:`flow_total_variation`."""

    default_reads = {"flow": "flow_mps", "mask": "flow_mask"}
    optional_reads = frozenset({"mask"})

    def __init__(self, weight: float = 0.05, enable_after: int = 0, reads=None):
        super().__init__(weight, enable_after, reads)

    def forward(self, flow: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return flow_total_variation(flow, mask)


class SparsityLoss(WeightedLoss):
    """L1 magnitude prior: ``forward(x (...), mask (...) | None)`` -> mean ``|x|`` (e.g. flow
    ``(B, 3, X, Y, Z)``: most of the world does not move)."""

    default_reads = {"x": "flow_mps", "mask": "flow_mask"}
    optional_reads = frozenset({"mask"})

    def __init__(self, weight: float = 0.01, enable_after: int = 0, reads=None):
        super().__init__(weight, enable_after, reads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        a = x.abs()
        if mask is not None and mask.dim() == a.dim() - 1:
            mask = mask[:, None]
        return _masked_mean(a, mask)
