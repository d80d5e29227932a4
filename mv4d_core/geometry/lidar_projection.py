"""LiDAR points seen by pinhole cameras: projection and sparse depth images (numpy or torch).

Depth is the optical z (the same quantity as ``GroundTruth.depth_m``), not the range along the ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from mv4d_core.geometry.camera import project
from mv4d_core.geometry.transforms import invert_transform, transform_points


@dataclass
class LidarProjection:
    """LiDAR points seen by each camera (padded to all ``P`` points; use ``valid``).

    * ``uv`` ``(N_cam, P, 2)`` pixel coordinates (NaN behind the camera).
    * ``depth_m`` ``(N_cam, P)`` optical z.
    * ``valid`` ``(N_cam, P)`` in front, inside the image and within ``[min_depth_m, max_depth_m]``.
    """

    uv: "np.ndarray | torch.Tensor"
    depth_m: "np.ndarray | torch.Tensor"
    valid: "np.ndarray | torch.Tensor"


def project_lidar_to_cameras(lidar_xyz_base, K, T_base_cam, width: int, height: int,
                             min_depth_m: float = 1.0, max_depth_m: float = 80.0) -> LidarProjection:
    """Project ``(P, 3)`` base_link points into ``N_cam`` cameras (``K`` ``(N, 3, 3)``,
    ``T_base_cam`` ``(N, 4, 4)``, images ``width x height``). numpy or torch in, same out."""
    if lidar_xyz_base.shape[-1] != 3 or lidar_xyz_base.ndim != 2:
        raise ValueError(f"lidar_xyz_base must be (P, 3), got {tuple(lidar_xyz_base.shape)}")
    T_cam_base = invert_transform(T_base_cam)
    pts_cam = transform_points(T_cam_base, lidar_xyz_base[None])
    uv, depth, valid = project(K, pts_cam, width, height)
    valid = valid & (depth >= min_depth_m) & (depth <= max_depth_m)
    return LidarProjection(uv, depth, valid)


def lidar_depth_image(proj: LidarProjection, width: int, height: int) -> np.ndarray:
    """Sparse depth maps ``(N_cam, H, W)`` float32 (0 = no return) from a numpy projection.

    Points land on the nearest pixel centre; where several land on one pixel the closest wins.
    """
    uv, depth, valid = (np.asarray(proj.uv), np.asarray(proj.depth_m), np.asarray(proj.valid))
    out = np.full((uv.shape[0], height, width), np.inf, dtype=np.float32)
    for c in range(uv.shape[0]):
        m = valid[c]
        px = np.clip(np.rint(uv[c, m]).astype(np.int64), 0, [width - 1, height - 1])
        np.minimum.at(out[c], (px[:, 1], px[:, 0]), depth[c, m].astype(np.float32))
    out[~np.isfinite(out)] = 0
    return out
