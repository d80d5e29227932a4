"""Perception outputs -> arrays ready to become ROS messages (pure numpy, no ROS import).

Every 3D result is in ``base_link``; every function is pure. Point clouds come back as numpy
structured arrays whose field names, dtypes and offsets are the PointCloud2 layout to publish:

* :data:`OCCUPANCY_DTYPE` ``x, y, z, prob`` float32 (16-byte points)
* :data:`POINTS_DTYPE` ``x, y, z, rgb`` float32, ``rgb`` = packed ``0x00RRGGBB`` read as float32
  (the PCL/RViz "RGB8" convention)
* :data:`FLOW_DTYPE` ``x, y, z, vx, vy, vz`` float32 (m, m/s)
* :data:`MOVING_DTYPE` ``x, y, z, vx, vy, vz, moving_prob`` float32: the voxels a planner should treat
  as moving objects
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mv4d_core.geometry.transforms import transform_points
from mv4d_core.geometry.voxel_grid import VoxelGridSpec

OCCUPANCY_DTYPE = np.dtype({"names": ["x", "y", "z", "prob"], "formats": ["<f4"] * 4,
                            "offsets": [0, 4, 8, 12], "itemsize": 16})
POINTS_DTYPE = np.dtype({"names": ["x", "y", "z", "rgb"], "formats": ["<f4"] * 4,
                         "offsets": [0, 4, 8, 12], "itemsize": 16})
FLOW_DTYPE = np.dtype({"names": ["x", "y", "z", "vx", "vy", "vz"], "formats": ["<f4"] * 6,
                       "offsets": [0, 4, 8, 12, 16, 20], "itemsize": 24})
MOVING_DTYPE = np.dtype({"names": ["x", "y", "z", "vx", "vy", "vz", "moving_prob"], "formats": ["<f4"] * 7,
                         "offsets": [0, 4, 8, 12, 16, 20, 24], "itemsize": 28})


def _check_volume(name: str, a: np.ndarray, grid: VoxelGridSpec, trailing: tuple[int, ...] = ()) -> np.ndarray:
    a = np.asarray(a)
    if a.shape != tuple(grid.shape) + trailing:
        raise ValueError(f"{name} must be {tuple(grid.shape) + trailing} for the grid, got {a.shape}")
    return a


def occupied_voxels(occupancy_prob: np.ndarray, grid: VoxelGridSpec, threshold: float) -> np.ndarray:
    """Centres of voxels with ``prob >= threshold`` (``(X, Y, Z)``) as an :data:`OCCUPANCY_DTYPE` array
    ``(M,)``. Points come out in C order of ``(ix, iy, iz)`` so equal inputs give byte-identical clouds.
    """
    prob = _check_volume("occupancy_prob", occupancy_prob, grid)
    occ = np.isfinite(prob) & (prob >= threshold)
    idx = np.argwhere(occ)
    out = np.zeros(len(idx), OCCUPANCY_DTYPE)
    xyz = grid.index_to_metric(idx).astype(np.float32)
    out["x"], out["y"], out["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    out["prob"] = prob[occ].astype(np.float32)
    return out


def flow_points(occupancy_prob: np.ndarray, flow_mps: np.ndarray, grid: VoxelGridSpec, threshold: float,
                min_speed_mps: float = 0.0) -> np.ndarray:
    """Occupied voxel centres with their velocity ``(X, Y, Z, 3)`` m/s as :data:`FLOW_DTYPE` ``(M,)``;
    voxels slower than ``min_speed_mps`` are left out."""
    prob = _check_volume("occupancy_prob", occupancy_prob, grid)
    flow = _check_volume("flow_mps", flow_mps, grid, (3,))
    keep = np.isfinite(prob) & (prob >= threshold) & np.all(np.isfinite(flow), axis=-1)
    if min_speed_mps > 0:
        keep &= np.linalg.norm(flow, axis=-1) >= min_speed_mps
    return _voxel_velocities(keep, flow, grid, FLOW_DTYPE)


def _voxel_velocities(keep: np.ndarray, flow: np.ndarray, grid: VoxelGridSpec, dtype: np.dtype) -> np.ndarray:
    """The ``keep`` voxels' centres and velocities as a ``dtype`` record array (other fields zero)."""
    out = np.zeros(int(keep.sum()), dtype)
    xyz = grid.index_to_metric(np.argwhere(keep)).astype(np.float32)
    v = flow[keep].astype(np.float32)
    for k, name in enumerate(("x", "y", "z")):
        out[name] = xyz[:, k]
        out["v" + name] = v[:, k]
    return out


def moving_voxels(occupancy_prob: np.ndarray, flow_mps: np.ndarray, motion_prob: np.ndarray, grid: VoxelGridSpec,
                  threshold: float, min_speed_mps: float, min_motion_prob: float = 0.5) -> np.ndarray:
    """Occupied voxels whose content moves (``motion_prob >= min_motion_prob`` and speed at least
    ``min_speed_mps``) with their velocity and motion probability, as :data:`MOVING_DTYPE` ``(M,)``."""
    prob = _check_volume("occupancy_prob", occupancy_prob, grid)
    flow = _check_volume("flow_mps", flow_mps, grid, (3,))
    motion = _check_volume("motion_prob", motion_prob, grid)
    speed = np.linalg.norm(flow, axis=-1)
    keep = (np.isfinite(prob) & (prob >= threshold) & np.isfinite(speed) & (speed >= min_speed_mps)
            & np.isfinite(motion) & (motion >= min_motion_prob))
    out = _voxel_velocities(keep, flow, grid, MOVING_DTYPE)
    out["moving_prob"] = motion[keep].astype(np.float32)
    return out


def velocity_arrows(moving: np.ndarray, max_arrows: int, horizon_s: float = 1.0) -> np.ndarray:
    """``(K, 2, 3)`` float32 start/end points of velocity arrows for the :data:`MOVING_DTYPE` voxels:
    where each moves in ``horizon_s``; at most ``max_arrows`` (the fastest kept)."""
    if max_arrows < 1:
        raise ValueError(f"max_arrows must be >= 1, got {max_arrows}")
    m = moving
    if len(m) > max_arrows:
        speed = np.sqrt(m["vx"] ** 2 + m["vy"] ** 2 + m["vz"] ** 2)
        m = m[np.sort(np.argsort(-speed, kind="stable")[:max_arrows])]
    start = np.stack([m["x"], m["y"], m["z"]], -1)
    end = start + horizon_s * np.stack([m["vx"], m["vy"], m["vz"]], -1)
    return np.stack([start, end], 1).astype(np.float32)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 -> ``(...)`` float32 whose bits are ``0x00RRGGBB`` (RViz RGB8 field)."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return packed.astype(np.uint32).view(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`: float32 ``(...)`` -> uint8 ``(..., 3)``."""
    u = np.ascontiguousarray(packed, dtype=np.float32).view(np.uint32)
    return np.stack([(u >> 16) & 255, (u >> 8) & 255, u & 255], -1).astype(np.uint8)


def backproject_depth(depth_m: np.ndarray, intrinsics: np.ndarray, T_base_cam: np.ndarray, colors: np.ndarray,
                      stride: int = 1, max_depth_m: float = np.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Back-project per-camera depth maps into base_link.

    ``depth_m`` ``(N, h, w)`` optical-z metres; ``intrinsics`` ``(N, 3, 3)`` for ``h x w``;
    ``T_base_cam`` ``(N, 4, 4)``; ``colors`` ``(N, h, w, 3)`` uint8 RGB at the depth size. Every
    ``stride``-th pixel in u and v is used; non-finite, non-positive or farther than
    ``max_depth_m`` depths are skipped. Returns ``xyz`` ``(P, 3)`` float32, ``rgb`` ``(P, 3)``
    uint8 and the camera index ``(P,)`` int16 of each point.
    """
    depth = np.asarray(depth_m, dtype=np.float32)
    n, h, w = depth.shape
    if colors.shape != (n, h, w, 3):
        raise ValueError(f"colors must be {(n, h, w, 3)} to match depth_m, got {colors.shape}")
    vs, us = np.mgrid[0:h:stride, 0:w:stride]
    xyz, rgb, cam = [], [], []
    for i in range(n):
        d = depth[i, vs, us]
        ok = np.isfinite(d) & (d > 0) & (d <= max_depth_m)
        u, v, z = us[ok].astype(np.float64), vs[ok].astype(np.float64), d[ok].astype(np.float64)
        K = intrinsics[i]
        # Inverse pinhole with skew: y from v first, then x from u.
        y = (v - K[1, 2]) / K[1, 1] * z
        x = (u - K[0, 2] - K[0, 1] * y / z) / K[0, 0] * z
        xyz.append(transform_points(np.asarray(T_base_cam[i], np.float64), np.stack([x, y, z], -1)).astype(np.float32))
        rgb.append(colors[i, vs, us][ok].astype(np.uint8))
        cam.append(np.full(len(z), i, np.int16))
    if not xyz:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.int16)
    return np.concatenate(xyz), np.concatenate(rgb), np.concatenate(cam)


def points_cloud(xyz: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """``(P, 3)`` base_link points + ``(P, 3)`` uint8 colours -> :data:`POINTS_DTYPE` ``(P,)``."""
    xyz = np.asarray(xyz, np.float32).reshape(-1, 3)
    out = np.zeros(len(xyz), POINTS_DTYPE)
    out["x"], out["y"], out["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    out["rgb"] = pack_rgb(np.asarray(rgb).reshape(-1, 3))
    return out


def depth_image(depth_m: np.ndarray) -> np.ndarray:
    """One ``(h, w)`` depth map as a C-contiguous float32 image for a ``32FC1`` message.

    REP 118: invalid (non-positive or NaN) -> NaN, ``+inf`` (no return) stays ``+inf``."""
    d = np.array(depth_m, dtype=np.float32, copy=True)
    if d.ndim != 2:
        raise ValueError(f"depth_m must be (h, w), got {d.shape}")
    d[~(d > 0)] = np.nan
    return np.ascontiguousarray(d)


@dataclass(frozen=True)
class BevGrid:
    """Data for ``nav_msgs/OccupancyGrid``: ``data`` int8 ``(height * width,)`` row-major (row = y
    index), 0..100 occupancy, -1 unknown; ``origin_xyz`` is the corner of cell (0, 0) in base_link."""

    data: np.ndarray
    width: int
    height: int
    resolution: float
    origin_xyz: tuple[float, float, float]


def bev_grid(occupancy_prob: np.ndarray, grid: VoxelGridSpec, z_min_m: float, z_max_m: float,
             observed: np.ndarray | None = None) -> BevGrid:
    """Collapse the voxels whose centre lies in ``[z_min_m, z_max_m]`` into a 2D grid: cell value =
    ``round(100 * max prob)`` over that slab; columns with no observed voxel in the slab are -1.

    The BEV cell size is the voxel x size (the grid must have square cells in x and y).
    """
    prob = _check_volume("occupancy_prob", occupancy_prob, grid)
    if abs(grid.voxel_size[0] - grid.voxel_size[1]) > 1e-9:
        raise ValueError(f"BEV needs square cells, voxel_size is {grid.voxel_size}")
    z_centres = grid.range_min[2] + (np.arange(grid.shape[2]) + 0.5) * grid.voxel_size[2]
    in_slab = (z_centres >= z_min_m) & (z_centres <= z_max_m)
    seen = np.ones(prob.shape, bool) if observed is None else _check_volume("observed", observed, grid).astype(bool)
    seen = seen & np.isfinite(prob) & in_slab[None, None, :]
    p = np.where(seen, prob, -np.inf).max(axis=2)  # (X, Y)
    known = np.isfinite(p)
    cell = np.full(p.shape, -1, np.int8)
    cell[known] = np.clip(np.round(np.clip(p[known], 0.0, 1.0) * 100), 0, 100).astype(np.int8)
    # OccupancyGrid is row-major with rows along y: transpose (X, Y) -> (Y, X).
    data = np.ascontiguousarray(cell.T).ravel()
    return BevGrid(data=data, width=grid.shape[0], height=grid.shape[1], resolution=float(grid.voxel_size[0]),
                   origin_xyz=(grid.range_min[0], grid.range_min[1], float(z_min_m)))


def height_color(z_m: float, z_min_m: float, z_max_m: float) -> tuple[float, float, float]:
    """RGB (0..1) of a height: a blue -> green -> red ramp over ``[z_min_m, z_max_m]`` (clamped)."""
    t = 0.0 if z_max_m <= z_min_m else min(1.0, max(0.0, (z_m - z_min_m) / (z_max_m - z_min_m)))
    if t < 0.5:
        return 0.0, 2 * t, 1.0 - 2 * t
    return 2 * t - 1.0, 2.0 - 2 * t, 0.0


@dataclass(frozen=True)
class CubeList:
    """One ``CUBE_LIST`` marker: every cube of one voxel layer, ``points`` ``(K, 3)`` float32 centres."""

    layer: int
    points: np.ndarray
    color_rgba: tuple[float, float, float, float]


def marker_cubes(voxels: np.ndarray, grid: VoxelGridSpec, max_markers: int) -> list[CubeList]:
    """Occupied voxels (:data:`OCCUPANCY_DTYPE`) -> one cube list per z layer of ``grid`` coloured by
    height, at most ``max_markers`` cubes in total (the most probable ones are kept), layers ascending.

    The node publishes a ``DELETEALL`` marker before these (in-place CUBE_LIST updates degrade RViz2).
    """
    if max_markers < 1:
        raise ValueError(f"max_markers must be >= 1, got {max_markers}")
    v = voxels
    if len(v) > max_markers:
        # Stable sort on -prob keeps equal-probability voxels in grid order: deterministic output.
        keep = np.sort(np.argsort(-v["prob"], kind="stable")[:max_markers])
        v = v[keep]
    layer = np.floor((np.asarray(v["z"], np.float64) - grid.range_min[2]) / grid.voxel_size[2]).astype(np.int64)
    out = []
    for k in np.unique(layer):
        sel = v[layer == k]
        pts = np.stack([sel["x"], sel["y"], sel["z"]], -1).astype(np.float32)
        z = grid.range_min[2] + (k + 0.5) * grid.voxel_size[2]
        out.append(CubeList(int(k), pts, (*height_color(z, grid.range_min[2], grid.range_max[2]), 1.0)))
    return out
