"""LiDAR depth supervision: L1 between predicted depth and LiDAR depth at LiDAR pixels.

Depth is the optical z (the same quantity as ``GroundTruth.depth_m`` and the renderer's
``depth_m``), not the range along the ray; the projection lives in
:mod:`mv4d_core.geometry.lidar_projection`.
"""

from __future__ import annotations

import torch

from mv4d_core.geometry.lidar_projection import LidarProjection, lidar_depth_image, project_lidar_to_cameras
from mv4d_core.losses.base import WeightedLoss

__all__ = ["LidarDepthLoss", "LidarProjection", "lidar_depth_image", "project_lidar_to_cameras"]


class LidarDepthLoss(WeightedLoss):
    """Masked L1 between rendered and LiDAR depth at LiDAR pixels (UniPAD/MIM4D).

    ``forward(pred_depth_m (...), target_depth_m (...), valid (...) bool | None)`` -> scalar mean
    of ``|pred - target|`` (``relative``: ``|pred - target| / target``, the AbsRel of the pixels)
    over valid entries (targets <= 0 or non-finite are invalid too); 0 (with grad) when nothing is
    valid. Typical shapes: rays cast at LiDAR pixels ``(V, M)``, or sparse maps ``(V, H, W)`` from
    :func:`lidar_depth_image`.
    """

    default_reads = {"pred_depth_m": "lidar_ray_depth_m", "target_depth_m": "lidar_depth_m",
                     "valid": "lidar_depth_valid"}
    optional_reads = frozenset({"valid"})

    def __init__(self, weight: float = 1.0, enable_after: int = 0, reads=None, *, relative: bool = False):
        super().__init__(weight, enable_after, reads)
        self.relative = relative

    def forward(self, pred_depth_m: torch.Tensor, target_depth_m: torch.Tensor,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        if pred_depth_m.shape != target_depth_m.shape:
            raise ValueError(f"pred_depth_m {tuple(pred_depth_m.shape)} and target_depth_m "
                             f"{tuple(target_depth_m.shape)} differ in shape")
        m = torch.isfinite(target_depth_m) & (target_depth_m > 0)
        if valid is not None:
            m = m & valid.bool()
        if not m.any():
            return (pred_depth_m * 0).sum()
        err = (pred_depth_m[m] - target_depth_m[m]).abs()
        return (err / target_depth_m[m]).mean() if self.relative else err.mean()
