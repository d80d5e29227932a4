"""UniScene-style occupancy pre-training: fused multi-sweep LiDAR labels + binary sigmoid focal loss.

Labels (preprocessing, numpy): the current frame and its neighbours (UniScene: ±2 keyframes)
are moved into the current ``base_link`` with the ego poses, voxelised on a
:class:`VoxelGridSpec`; a voxel holding any point is OCCUPIED. Beyond UniScene, voxels
traversed by a LiDAR ray before its hit (minus a margin) are FREE; every other voxel is
UNKNOWN and ignored by the loss (UniScene calls all of them free). Occupied wins over free.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mv4d_core.geometry.transforms import invert_transform, transform_points
from mv4d_core.geometry.voxel_grid import VoxelGridSpec
from mv4d_core.losses.base import WeightedLoss

OCC_UNKNOWN = -1
OCC_FREE = 0
OCC_OCCUPIED = 1


def fuse_lidar_sweeps(lidar_xyz_base: Sequence[np.ndarray], T_world_base: Sequence[np.ndarray] | np.ndarray,
                      current: int, origins_base: np.ndarray | None = None):
    """Move every sweep's points into the ``current`` frame's base_link.

    Args:
        lidar_xyz_base: F arrays ``(P_f, 3)``, each in its own frame's base_link.
        T_world_base: ``(F, 4, 4)`` ego poses.
        current: index of the frame the labels are for.
        origins_base: ``(3,)`` LiDAR origin in base_link (e.g. ``rig.lidar.T_base_lidar[:3, 3]``),
            default the base_link origin.
    Returns:
        ``(points (sum P_f, 3), ray origins (sum P_f, 3))`` in the current base_link, float64.
    """
    T = np.asarray(T_world_base, dtype=np.float64)
    if T.ndim != 3 or T.shape[1:] != (4, 4) or len(T) != len(lidar_xyz_base):
        raise ValueError(f"T_world_base must be (F={len(lidar_xyz_base)}, 4, 4), got {T.shape}")
    o = np.zeros(3) if origins_base is None else np.asarray(origins_base, dtype=np.float64).reshape(3)
    T_cur_world = invert_transform(T[current])
    pts, origins = [], []
    for f, xyz in enumerate(lidar_xyz_base):
        T_cur_f = T_cur_world @ T[f]
        p = transform_points(T_cur_f, np.asarray(xyz, dtype=np.float64).reshape(-1, 3))
        pts.append(p)
        origins.append(np.broadcast_to(transform_points(T_cur_f, o[None])[0], p.shape))
    return np.concatenate(pts), np.concatenate(origins)


def occupancy_labels_from_points(points_base: np.ndarray, grid: VoxelGridSpec, origins_base: np.ndarray | None = None,
                                 free_space: bool = True, hit_margin_m: float | None = None,
                                 step_m: float | None = None, ground_z_m: float | None = 0.0,
                                 ground_clearance_m: float | None = None, chunk: int = 20000,
                                 solid_behind_m: float = 0.0) -> np.ndarray:
    """Voxel labels ``(X, Y, Z)`` int8 in {OCC_UNKNOWN, OCC_FREE, OCC_OCCUPIED} from points in base_link.

    Free space: each ray from its origin to its hit is sampled every ``step_m`` (default half
    the smallest voxel edge) up to ``range - hit_margin_m`` (default one voxel diagonal, so the
    hit voxel and its neighbours stay unknown unless occupied). Sampling at half a voxel may
    skip a voxel whose corner the ray barely clips; those stay unknown (conservative).

    Ground rays: a ray that hits below ``ground_z_m + ground_clearance_m`` (default one voxel
    height) grazes the ground voxel layer for metres before its hit; its samples below that
    height are not marked free (otherwise the road layer between scan rings would be labelled
    free). ``ground_z_m=None`` turns this off.

    Solid behind surfaces (``solid_behind_m`` > 0): a return is taken as the face of a solid at least
    that thick, so UNKNOWN voxels up to ``solid_behind_m`` behind the hit along its ray (above the
    ground layer) become OCCUPIED; voxels another ray saw free stay free.
    """
    pts = np.asarray(points_base, dtype=np.float64).reshape(-1, 3)
    if origins_base is None:
        pts = pts[np.all(np.isfinite(pts), axis=1)]
    labels = np.full(grid.shape, OCC_UNKNOWN, dtype=np.int8)
    if free_space and len(pts):
        if origins_base is None:
            origins = np.zeros_like(pts)
        else:
            origins = np.asarray(origins_base, dtype=np.float64).reshape(-1, 3)
            keep = np.all(np.isfinite(pts), axis=1) & np.all(np.isfinite(origins), axis=1)
            pts, origins = pts[keep], origins[keep]
        vs = np.asarray(grid.voxel_size)
        step = float(step_m) if step_m is not None else 0.5 * float(vs.min())
        margin = float(hit_margin_m) if hit_margin_m is not None else float(np.linalg.norm(vs))
        free = np.zeros(grid.num_voxels, dtype=bool)
        for s in range(0, len(pts), chunk):
            p, o = pts[s:s + chunk], origins[s:s + chunk]
            d = p - o
            rng = np.linalg.norm(d, axis=1)
            n = np.floor(np.maximum(rng - margin, 0) / step).astype(np.int64)
            total = int(n.sum())
            if total == 0:
                continue
            ray = np.repeat(np.arange(len(p)), n)
            k = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
            t = (k + 0.5) * step / np.repeat(rng, n)
            samples = o[ray] + t[:, None] * d[ray]
            if ground_z_m is not None:
                top = ground_z_m + (float(vs[2]) if ground_clearance_m is None else float(ground_clearance_m))
                grazing = (p[ray, 2] < top) & (samples[:, 2] < top)
                samples = samples[~grazing]
            idx, inside = grid.points_to_voxels(samples)
            idx = idx[inside]
            free[np.ravel_multi_index(idx.T, grid.shape)] = True
        labels.reshape(-1)[free] = OCC_FREE
    if solid_behind_m > 0 and len(pts):
        solid = _solid_behind(pts, origins if free_space and origins_base is not None else np.zeros_like(pts),
                              grid, solid_behind_m, ground_z_m)
        labels.reshape(-1)[solid & (labels.reshape(-1) == OCC_UNKNOWN)] = OCC_OCCUPIED
    idx, inside = grid.points_to_voxels(pts) if len(pts) else (np.zeros((0, 3), np.int64), np.zeros(0, bool))
    idx = idx[inside]
    labels[idx[:, 0], idx[:, 1], idx[:, 2]] = OCC_OCCUPIED
    return labels


def _solid_behind(pts: np.ndarray, origins: np.ndarray, grid: VoxelGridSpec, depth_m: float,
                  ground_z_m: float | None) -> np.ndarray:
    """Flat mask of the voxels up to ``depth_m`` behind each hit along its ray (above the ground layer)."""
    vs = np.asarray(grid.voxel_size)
    step = 0.5 * float(vs.min())
    d = pts - origins
    u = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    top = (ground_z_m if ground_z_m is not None else -np.inf) + float(vs[2])
    keep = pts[:, 2] >= top                   # ground returns have nothing solid under the road to fill
    p, u = pts[keep], u[keep]
    out = np.zeros(grid.num_voxels, bool)
    for k in range(1, int(np.floor(depth_m / step)) + 1):
        samples = p + (k * step) * u
        idx, inside = grid.points_to_voxels(samples[samples[:, 2] >= top])
        out[np.ravel_multi_index(idx[inside].T, grid.shape)] = True
    return out


def fused_occupancy_labels(lidar_xyz_base, T_world_base, current: int, grid: VoxelGridSpec,
                           origins_base=None, free_space: bool = True, **kwargs) -> np.ndarray:
    """:func:`fuse_lidar_sweeps` + :func:`occupancy_labels_from_points` in one call."""
    pts, origins = fuse_lidar_sweeps(lidar_xyz_base, T_world_base, current, origins_base)
    return occupancy_labels_from_points(pts, grid, origins, free_space=free_space, **kwargs)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0,
                       alpha: float = 0.25) -> torch.Tensor:
    """Element-wise binary focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` (same shape as input)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


class OccupancyFocalLoss(WeightedLoss):
    """Binary sigmoid focal loss (UniScene code values gamma=2, alpha=0.25) over KNOWN voxels.

    ``forward(logits (B, X, Y, Z), labels (B, X, Y, Z) int in {-1, 0, 1})`` -> scalar mean over
    voxels whose label is not :data:`OCC_UNKNOWN`. ``from_sdf=True`` takes an SDF instead of
    logits and uses ``logit = -sdf / sdf_scale_m`` (occupied where s <= 0).
    """

    default_reads = {"logits": "occupancy_logits", "labels": "occupancy_labels"}

    def __init__(self, weight: float = 1.0, enable_after: int = 0, reads=None, *, gamma: float = 2.0,
                 alpha: float = 0.25, from_sdf: bool = False, sdf_scale_m: float = 0.1):
        super().__init__(weight, enable_after, reads)
        self.gamma, self.alpha = gamma, alpha
        self.from_sdf, self.sdf_scale_m = from_sdf, sdf_scale_m

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=logits.device)
        if not labels.is_signed() or labels.is_floating_point():
            raise TypeError(f"occupancy labels must be a signed integer tensor (-1 = unknown), got {labels.dtype}")
        if logits.shape != labels.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in shape")
        if self.from_sdf:
            logits = -logits / self.sdf_scale_m
        known = labels != OCC_UNKNOWN
        if not known.any():
            return (logits * 0).sum()
        return sigmoid_focal_loss(logits[known], (labels[known] == OCC_OCCUPIED).to(logits.dtype),
                                  self.gamma, self.alpha).mean()
