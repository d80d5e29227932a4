"""The LiDAR inputs of the fusion model, computed in pre-processing (numpy): one rule for the node,
``mv4d infer``, ``mv4d eval``, the exported graph's callers and training.

Two tensors per sample:

* ``lidar_volume`` ``(C, X, Y, Z)`` float32 on the model grid (base_link), :data:`VOLUME_CHANNELS`:
  the current sweep's point count (log1p), mean height of its points inside the voxel (relative to
  the voxel centre, in voxel heights), mean intensity (/255), free-space traversals (log1p) from ray
  casting each return back to the sensor origin; then per previous sweep ``k`` (ego-compensated into
  the current base_link) its point count (log1p) and its time offset (s, where it has points), so a
  surface that moved leaves a displacement the network can read.
* ``lidar_depth`` ``(N, 3, H, W)`` float32 per camera at the model image size: the current sweep's
  sparse depth (optical z, m; 0 = no return), a classical completion of it (m; 0 = none) and the
  validity of the sparse depth (0/1).

Points that are NaN/inf are dropped, clouds above ``max_points`` are subsampled deterministically
(every k-th point), points outside the grid still give camera depth; :class:`LidarStats` counts each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mv4d_core.geometry.lidar_projection import lidar_depth_image, project_lidar_to_cameras
from mv4d_core.geometry.transforms import transform_points
from mv4d_core.geometry.voxel_grid import VoxelGridSpec

#: Channels of the current sweep in ``lidar_volume``; each previous sweep adds ``count``, ``dt``.
CURRENT_CHANNELS: tuple[str, ...] = ("count", "height", "intensity", "free")
PREVIOUS_CHANNELS: tuple[str, ...] = ("count", "dt_s")
DEPTH_CHANNELS: tuple[str, ...] = ("sparse_m", "completion_m", "valid")


def volume_channels(previous_sweeps: int) -> int:
    return len(CURRENT_CHANNELS) + len(PREVIOUS_CHANNELS) * previous_sweeps


@dataclass
class Sweep:
    """One LiDAR sweep: ``xyz`` (P, 3) in the base_link of its own time, ``intensity`` (P,) or None,
    ``T_world_base`` (4, 4) ego pose at that time, ``stamp_ns``."""

    xyz: np.ndarray
    intensity: np.ndarray | None
    T_world_base: np.ndarray
    stamp_ns: int


@dataclass
class LidarStats:
    """What pre-processing did to a cloud: points received, removed as non-finite, removed by
    subsampling (over ``max_points``), and how many fell outside the grid."""

    points: int = 0
    nonfinite: int = 0
    subsampled_away: int = 0
    outside_grid: int = 0
    counts: dict = field(default_factory=dict)


def clean_points(xyz: np.ndarray, intensity: np.ndarray | None, max_points: int,
                 stats: LidarStats | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Drop non-finite points, then keep every ``ceil(P / max_points)``-th point (deterministic)."""
    xyz = np.asarray(xyz, np.float32).reshape(-1, 3)
    ok = np.isfinite(xyz).all(1)
    if intensity is not None:
        intensity = np.asarray(intensity, np.float32).reshape(-1)
        ok &= np.isfinite(intensity)
    if stats is not None:
        stats.points += len(xyz)
        stats.nonfinite += int((~ok).sum())
    xyz = xyz[ok]
    intensity = None if intensity is None else intensity[ok]
    if len(xyz) > max_points:
        step = -(-len(xyz) // max_points)
        if stats is not None:
            stats.subsampled_away += len(xyz) - len(xyz[::step])
        xyz = xyz[::step]
        intensity = None if intensity is None else intensity[::step]
    return xyz, intensity


def _voxel_index(xyz: np.ndarray, grid: VoxelGridSpec) -> tuple[np.ndarray, np.ndarray]:
    """Flat voxel index of each point and the inside mask."""
    idx = np.floor((xyz - np.asarray(grid.range_min, np.float32)) / np.asarray(grid.voxel_size, np.float32))
    dims = np.asarray(grid.shape)
    inside = np.all((idx >= 0) & (idx < dims), axis=1)
    ii = idx[inside].astype(np.int64)
    return np.ravel_multi_index(ii.T, grid.shape) if len(ii) else np.zeros(0, np.int64), inside


def free_space_counts(xyz: np.ndarray, origin: np.ndarray, grid: VoxelGridSpec, margin_m: float | None = None,
                      chunk: int = 40000) -> np.ndarray:
    """``(X, Y, Z)`` float32: how many rays from ``origin`` (3,) to the returns ``xyz`` (P, 3) pass
    through each voxel, sampled every voxel edge and stopping ``margin_m`` (default one voxel
    diagonal) before the return; samples outside the grid are skipped."""
    V = grid.num_voxels
    counts = np.zeros(V, np.float32)
    if len(xyz) == 0:
        return counts.reshape(grid.shape)
    vs = np.asarray(grid.voxel_size, np.float32)
    step = float(vs.min())
    margin = float(np.linalg.norm(vs)) if margin_m is None else float(margin_m)
    lo, hi = np.asarray(grid.range_min, np.float32), np.asarray(grid.range_max, np.float32)
    o = np.asarray(origin, np.float32).reshape(3)
    for s in range(0, len(xyz), chunk):
        p = xyz[s:s + chunk].astype(np.float32)
        d = p - o
        rng = np.linalg.norm(d, axis=1)
        u = d / np.maximum(rng, 1e-6)[:, None]
        # stop at the return (minus the margin) or where the ray leaves the grid box, whichever is first
        with np.errstate(divide="ignore", invalid="ignore"):
            t_exit = np.min(np.where(u > 0, (hi - o) / u, np.where(u < 0, (lo - o) / u, np.inf)), axis=1)
        t_end = np.minimum(rng - margin, t_exit)
        n = np.floor(np.maximum(t_end, 0) / step).astype(np.int64)
        total = int(n.sum())
        if total == 0:
            continue
        ray = np.repeat(np.arange(len(p)), n)
        k = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
        samples = o + ((k + 0.5) * step)[:, None].astype(np.float32) * u[ray]
        flat, _ = _voxel_index(samples, grid)
        counts += np.bincount(flat, minlength=V).astype(np.float32)
    return counts.reshape(grid.shape)


def sweep_volume(current: Sweep, previous: list[Sweep], origin_base: np.ndarray, grid: VoxelGridSpec,
                 previous_sweeps: int, free_space: bool = True, stats: LidarStats | None = None) -> np.ndarray:
    """``lidar_volume`` (see the module docstring) of ``current`` and up to ``previous_sweeps`` of
    ``previous`` (newest first), ``origin_base`` (3,) the LiDAR position in base_link."""
    X, Y, Z = grid.shape
    V = X * Y * Z
    C = volume_channels(previous_sweeps)
    out = np.zeros((C, V), np.float32)
    xyz = current.xyz
    flat, inside = _voxel_index(xyz, grid)
    if stats is not None:
        stats.outside_grid += int((~inside).sum())
    count = np.bincount(flat, minlength=V).astype(np.float32)
    has = count > 0
    out[0] = np.log1p(count)
    centre_z = grid.range_min[2] + (np.arange(Z) + 0.5) * grid.voxel_size[2]
    rel_h = (xyz[inside, 2] - centre_z[flat % Z]) / grid.voxel_size[2]
    out[1, has] = (np.bincount(flat, weights=rel_h, minlength=V)[has] / count[has]).astype(np.float32)
    if current.intensity is not None:
        inten = np.clip(current.intensity[inside], 0, 255) / 255.0
        out[2, has] = (np.bincount(flat, weights=inten, minlength=V)[has] / count[has]).astype(np.float32)
    if free_space:
        out[3] = np.log1p(free_space_counts(xyz, origin_base, grid).reshape(-1))
    T_cur_world = np.linalg.inv(np.asarray(current.T_world_base, np.float64))
    for k, prev in enumerate(previous[:previous_sweeps]):
        T = T_cur_world @ np.asarray(prev.T_world_base, np.float64)
        pts = transform_points(T, prev.xyz.astype(np.float64)).astype(np.float32)
        f, _ = _voxel_index(pts, grid)
        c = np.bincount(f, minlength=V).astype(np.float32)
        base = len(CURRENT_CHANNELS) + len(PREVIOUS_CHANNELS) * k
        out[base] = np.log1p(c)
        out[base + 1] = np.where(c > 0, (current.stamp_ns - prev.stamp_ns) * 1e-9, 0.0)
    return out.reshape(C, X, Y, Z)


# ----------------------------------------------------------------------------------------- depth

_DIAMOND5 = np.array([[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]], np.uint8)


def nearest_fill(sparse_m: np.ndarray) -> np.ndarray:
    """Every pixel takes the depth of the nearest valid pixel of ``sparse_m`` ``(H, W)`` (0 = none);
    all zeros when there is none."""
    from scipy import ndimage

    d = np.asarray(sparse_m, np.float32)
    if not (d > 0).any():
        return np.zeros_like(d)
    _, (iy, ix) = ndimage.distance_transform_edt(d <= 0, return_indices=True)
    return d[iy, ix]


def morphological_completion(sparse_m: np.ndarray, max_depth_m: float = 100.0) -> np.ndarray:
    """Classical depth completion of Ku, Harakeh and Waslander (2018, "In Defense of Classical Image
    Processing"), on an inverted map so that dilation prefers near points: 5x5 diamond dilation,
    5x5 closing, 7x7 dilation into empty pixels, the highest valid value of each column extended to
    the top, 31x31 dilation into large holes, 5x5 median then 5x5 Gaussian blur on valid pixels.
    ``(H, W)`` metres (0 = none) -> ``(H, W)`` metres (0 where nothing could be filled)."""
    import cv2

    d = np.asarray(sparse_m, np.float32).copy()
    valid = d > 0.1
    if not valid.any():
        return np.zeros_like(d)
    d[valid] = max_depth_m - d[valid]
    d = cv2.dilate(d, _DIAMOND5)
    d = cv2.morphologyEx(d, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    empty = d < 0.1
    d[empty] = cv2.dilate(d, np.ones((7, 7), np.uint8))[empty]
    has = d > 0.1
    cols = has.any(0)
    first = np.argmax(has, axis=0)
    rows = np.arange(d.shape[0])[:, None]
    top = (rows < first[None, :]) & cols[None, :]
    d = np.where(top, d[first, np.arange(d.shape[1])][None, :], d)
    empty = d < 0.1
    d[empty] = cv2.dilate(d, np.ones((31, 31), np.uint8))[empty]
    valid = d > 0.1
    d[valid] = cv2.medianBlur(d, 5)[valid]
    d[valid] = cv2.GaussianBlur(d, (5, 5), 0)[valid]
    valid = d > 0.1
    d[valid] = max_depth_m - d[valid]
    d[~valid] = 0.0
    return d


def camera_depth_inputs(xyz_base: np.ndarray, K: np.ndarray, T_base_cam: np.ndarray, height: int, width: int,
                        min_depth_m: float = 0.5, max_depth_m: float = 100.0) -> np.ndarray:
    """``lidar_depth`` ``(N, 3, H, W)`` (see the module docstring) at ``height x width`` with the
    model-size intrinsics ``K`` (N, 3, 3)."""
    N = len(K)
    out = np.zeros((N, len(DEPTH_CHANNELS), height, width), np.float32)
    if len(xyz_base) == 0:
        return out
    proj = project_lidar_to_cameras(np.asarray(xyz_base, np.float64), np.asarray(K, np.float64),
                                    np.asarray(T_base_cam, np.float64), width, height, min_depth_m, max_depth_m)
    sparse = lidar_depth_image(proj, width, height)
    for c in range(N):
        out[c, 0] = sparse[c]
        out[c, 1] = morphological_completion(sparse[c])
        out[c, 2] = sparse[c] > 0
    return out


#: LiDAR height in base_link assumed for free-space ray casting when a source does not give the sensor pose.
DEFAULT_LIDAR_ORIGIN_M = (0.0, 0.0, 1.8)


def lidar_origin(T_base_lidar: np.ndarray | None) -> np.ndarray:
    """The sensor origin in base_link (``DEFAULT_LIDAR_ORIGIN_M`` when unknown)."""
    if T_base_lidar is None:
        return np.asarray(DEFAULT_LIDAR_ORIGIN_M, np.float32)
    return np.asarray(T_base_lidar, np.float32)[:3, 3]


def build_lidar_inputs(sweep: Sweep, previous: list[Sweep], origin_base: np.ndarray, K: np.ndarray,
                       T_base_cam: np.ndarray, image_hw: tuple[int, int], lidar_cfg, grid: VoxelGridSpec,
                       stats: LidarStats | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """``(lidar_volume, lidar_depth)`` of a sweep (cleaned first, see :func:`clean_points`) for a
    fusion model's ``lidar_cfg`` (:class:`~mv4d_core.models.config.LidarConfig`), or None when no
    finite point is left. ``K`` (N, 3, 3) is for the model image size ``image_hw``."""
    xyz, inten = clean_points(sweep.xyz, sweep.intensity, lidar_cfg.max_points, stats)
    if len(xyz) == 0:
        return None
    cur = Sweep(xyz, inten, sweep.T_world_base, sweep.stamp_ns)
    volume = sweep_volume(cur, previous, origin_base, grid, lidar_cfg.previous_sweeps, lidar_cfg.free_space, stats)
    depth = camera_depth_inputs(xyz, K, T_base_cam, *image_hw)
    return volume, depth
