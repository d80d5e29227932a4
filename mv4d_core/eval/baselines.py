"""Trivial baselines evaluated with the same metrics, so model numbers mean something.

* depth: a constant (median GT depth of training frames), a ground-plane prior (depth of the
  ``z = ground_z_m`` plane of base_link for rays below the horizon, ``far_m`` otherwise) and
  their minimum (ground where it is nearer than the constant, the constant elsewhere);
* occupancy: all free, and a ground slab (the voxel layer holding the ground plane);
* flow: zero flow (what a static-world model predicts).

:class:`mv4d_core.eval.scoring.Scorer` scores them through the same path as the model.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from mv4d_core.geometry.camera import unproject
from mv4d_core.geometry.voxel_grid import VoxelGridSpec


class ConstantDepthBaseline:
    """Predicts one depth everywhere: the median of valid GT depths seen in :meth:`fit`."""

    def __init__(self, depth_m: float | None = None, min_gt_m: float = 1.0, max_gt_m: float = 80.0):
        self.depth_m = depth_m
        self.min_gt_m, self.max_gt_m = min_gt_m, max_gt_m

    def fit(self, gt_depths_m: Iterable[np.ndarray], max_samples_per_image: int = 20000, seed: int = 0):
        """Median over (a deterministic subsample of) the valid pixels of the training depth maps."""
        rng = np.random.default_rng(seed)
        picks = []
        for d in gt_depths_m:
            d = np.asarray(d, dtype=np.float64).reshape(-1)
            v = d[np.isfinite(d) & (d > self.min_gt_m) & (d < self.max_gt_m)]
            if len(v) > max_samples_per_image:
                v = rng.choice(v, max_samples_per_image, replace=False)
            picks.append(v)
        allv = np.concatenate(picks) if picks else np.zeros(0)
        if allv.size == 0:
            raise ValueError("ConstantDepthBaseline.fit: no valid GT depth in the training frames")
        self.depth_m = float(np.median(allv))
        return self

    def predict(self, shape: tuple[int, ...]) -> np.ndarray:
        if self.depth_m is None:
            raise RuntimeError("ConstantDepthBaseline: call fit() or pass depth_m first")
        return np.full(shape, self.depth_m, dtype=np.float32)


def ground_plane_depth(K: np.ndarray, T_base_cam: np.ndarray, height: int, width: int, ground_z_m: float = 0.0,
                       far_m: float = 80.0) -> np.ndarray:
    """``(N, H, W)`` optical depth of the plane ``z = ground_z_m`` (base_link) per pixel, ``far_m`` for
    rays at or above the horizon (or hitting it beyond ``far_m``). ``K`` ``(N, 3, 3)``,
    ``T_base_cam`` ``(N, 4, 4)``."""
    K = np.asarray(K, dtype=np.float64).reshape(-1, 3, 3)
    T = np.asarray(T_base_cam, dtype=np.float64).reshape(-1, 4, 4)
    v, u = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    uv = np.stack([u, v], -1).reshape(-1, 2).astype(np.float64)
    out = np.full((len(K), height, width), far_m, dtype=np.float32)
    for c in range(len(K)):
        d_cam = unproject(K[c], uv, np.ones(len(uv)))          # optical depth 1 per ray
        d_base = d_cam @ T[c, :3, :3].T
        o_z = T[c, 2, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (ground_z_m - o_z) / d_base[:, 2]                 # optical depth at the plane
        hit = (d_base[:, 2] < 0) & (t > 0) & (t < far_m)
        out[c].reshape(-1)[hit] = t[hit]
    return out


def all_free_occupancy(grid: VoxelGridSpec, free_class: int) -> np.ndarray:
    """``(X, Y, Z)`` labels: nothing occupied."""
    return np.full(grid.shape, free_class, dtype=np.int64)


def ground_slab_occupancy(grid: VoxelGridSpec, free_class: int, occupied_class: int, ground_z_m: float = 0.0,
                          fill_below: bool = False) -> np.ndarray:
    """``(X, Y, Z)`` labels of a flat world: ``occupied_class`` in the voxel layer whose z-range
    contains ``ground_z_m`` (and every layer below it with ``fill_below``), ``free_class`` elsewhere."""
    z_lo = grid.range_min[2] + np.arange(grid.shape[2]) * grid.voxel_size[2]
    z_hi = z_lo + grid.voxel_size[2]
    layer = (z_lo <= ground_z_m) & (ground_z_m < z_hi)
    if fill_below:
        layer |= z_hi <= ground_z_m
    out = np.full(grid.shape, free_class, dtype=np.int64)
    out[:, :, layer] = occupied_class
    return out
