"""Classical LiDAR scene flow between two ego-compensated sweeps (numpy + scipy), no learning, no labels.

* :func:`nearest_neighbour_flow`: every point of sweep 0 moves to its nearest point of sweep 1.
* :func:`cluster_rigid_flow`: ICP-Flow-style: ground removed, the rest clustered (connected voxels),
  each cluster fitted to sweep 1 by a rigid ICP (yaw + translation); clusters whose fit does not move
  them, or does not explain them better than standing still, keep zero flow. Ego motion is removed
  first, so the static world is exactly zero by construction.

Both work in base_link 0: ``xyz0`` (P, 3) in base_link 0, ``xyz1_in0`` (Q, 3) sweep 1 moved into
base_link 0 with the ego poses (``inv(T_world_0) @ T_world_1``). Flow is the displacement (m) of each
point of sweep 0 over the sweep interval, object motion only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def nearest_neighbour_flow(xyz0: np.ndarray, xyz1_in0: np.ndarray) -> np.ndarray:
    """``(P, 3)`` displacement of each point of sweep 0 to its nearest point of sweep 1 (0 if sweep 1 is empty)."""
    from scipy.spatial import cKDTree

    xyz0 = np.asarray(xyz0, np.float64)
    if len(xyz1_in0) == 0 or len(xyz0) == 0:
        return np.zeros_like(xyz0)
    _, j = cKDTree(np.asarray(xyz1_in0, np.float64)).query(xyz0, k=1)
    return np.asarray(xyz1_in0, np.float64)[j] - xyz0


@dataclass(frozen=True)
class ClusterFlowConfig:
    """Ground at or below ``ground_z_m``; clusters = connected ``cluster_voxel_m`` voxels with at least
    ``min_points``; ICP with correspondences within ``match_m`` over ``iterations``, a cluster may move at
    most ``max_motion_m``; it counts as moving when its fitted displacement exceeds ``min_motion_m`` and
    the fit lowers the mean residual by ``min_gain`` (fraction) against standing still."""

    ground_z_m: float = 0.3
    cluster_voxel_m: float = 0.6
    min_points: int = 15
    match_m: float = 1.0
    iterations: int = 15
    max_motion_m: float = 3.0
    min_motion_m: float = 0.15
    min_gain: float = 0.3
    #: Coarse search before ICP: translations on a square lattice of this pitch within ``max_motion_m``.
    search_step_m: float = 0.25


def _clusters(xyz: np.ndarray, voxel_m: float) -> np.ndarray:
    """Connected-component label of each point (-1 never; 26-connected voxels of ``voxel_m``)."""
    from scipy import ndimage

    idx = np.floor(xyz / voxel_m).astype(np.int64)
    lo = idx.min(0)
    idx -= lo
    shape = idx.max(0) + 1
    occ = np.zeros(tuple(shape), bool)
    occ[tuple(idx.T)] = True
    lab, _ = ndimage.label(occ, structure=np.ones((3, 3, 3), bool))
    return lab[tuple(idx.T)] - 1


def _rigid_2d(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares yaw ``R`` (3, 3) and translation ``t`` (3,) with ``R src + t ~ dst`` (rotation about z)."""
    cs, cd = src.mean(0), dst.mean(0)
    a, b = src[:, :2] - cs[:2], dst[:, :2] - cd[:2]
    yaw = np.arctan2((a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum(), (a * b).sum())
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return R, cd - R @ cs


def _lattice(step_m: float, radius_m: float) -> np.ndarray:
    k = np.arange(-int(radius_m / step_m), int(radius_m / step_m) + 1) * step_m
    xy = np.stack(np.meshgrid(k, k, indexing="ij"), -1).reshape(-1, 2)
    xy = xy[np.linalg.norm(xy, axis=1) <= radius_m + 1e-9]
    return np.c_[xy, np.zeros(len(xy))]


def _best_translation(src: np.ndarray, tree, cfg: ClusterFlowConfig) -> np.ndarray:
    """The lattice translation (x, y) with the lowest mean truncated nearest distance (a subsample of
    the cluster's points, so the search stays cheap)."""
    cand = _lattice(cfg.search_step_m, cfg.max_motion_m)
    pts = src[:: max(1, len(src) // 64)]
    moved = (pts[None] + cand[:, None]).reshape(-1, 3)
    d, _ = tree.query(moved, k=1, distance_upper_bound=cfg.match_m)
    cost = np.minimum(d, cfg.match_m).reshape(len(cand), len(pts)).mean(1)
    return cand[int(np.argmin(cost))]


def cluster_rigid_flow(xyz0: np.ndarray, xyz1_in0: np.ndarray, cfg: ClusterFlowConfig = ClusterFlowConfig()
                       ) -> np.ndarray:
    """``(P, 3)`` displacement of each point of sweep 0 (see the module docstring)."""
    from scipy.spatial import cKDTree

    xyz0 = np.asarray(xyz0, np.float64)
    flow = np.zeros_like(xyz0)
    ok0 = np.isfinite(xyz0).all(1) & (xyz0[:, 2] > cfg.ground_z_m)
    q = np.asarray(xyz1_in0, np.float64)
    q = q[np.isfinite(q).all(1) & (q[:, 2] > cfg.ground_z_m)]
    if ok0.sum() < cfg.min_points or len(q) < cfg.min_points:
        return flow
    pts_idx = np.nonzero(ok0)[0]
    lab = _clusters(xyz0[pts_idx], cfg.cluster_voxel_m)
    tree = cKDTree(q)
    order = np.argsort(lab, kind="stable")
    bounds = np.nonzero(np.diff(lab[order]))[0] + 1
    for members in np.split(order, bounds):
        if len(members) < cfg.min_points:
            continue
        ids = pts_idx[members]
        src = xyz0[ids]
        d0, _ = tree.query(src, k=1, distance_upper_bound=cfg.match_m)
        still = np.minimum(d0, cfg.match_m).mean()
        R, t = np.eye(3), _best_translation(src, tree, cfg)
        moved = src + t
        for _ in range(cfg.iterations):
            d, j = tree.query(moved, k=1, distance_upper_bound=cfg.match_m)
            m = np.isfinite(d)
            if m.sum() < max(3, cfg.min_points // 3):
                break
            R_step, t_step = _rigid_2d(moved[m], q[j[m]])
            R, t = R_step @ R, R_step @ t + t_step
            moved = src @ R.T + t
        disp = moved - src
        if np.linalg.norm(disp.mean(0)) > cfg.max_motion_m:
            continue
        d1, _ = tree.query(moved, k=1, distance_upper_bound=cfg.match_m)
        fitted = np.minimum(d1, cfg.match_m).mean()
        if np.linalg.norm(disp.mean(0)) > cfg.min_motion_m and fitted < (1.0 - cfg.min_gain) * still:
            flow[ids] = disp
    return flow
