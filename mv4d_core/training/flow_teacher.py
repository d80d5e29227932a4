"""Pseudo scene-flow labels for distillation: the classical teacher run over the training sweeps,
cached on disk next to the run (``<cache_dir>/flow_teacher/<key>.npz``) so later runs reuse them.

For a triplet's frame ``t``: the teacher (:func:`mv4d_core.geometry.scene_flow.cluster_rigid_flow`)
matches sweep ``t`` to sweep ``t+1`` moved into base_link ``t`` with the ego poses, giving each point
its object displacement to ``t+1``. Every teacher-moving point inside the grid is kept, plus a
deterministic subsample of the others (``max_points`` in all). The key hashes the points, the poses
and the teacher's settings, so a change of either recomputes.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mv4d_core.geometry.scene_flow import ClusterFlowConfig, cluster_rigid_flow
from mv4d_core.geometry.transforms import invert_transform, transform_points
from mv4d_core.geometry.voxel_grid import VoxelGridSpec
from mv4d_core.utils.atomic_write import write_bytes_atomic


def teacher_key(xyz0: np.ndarray, xyz1: np.ndarray, T_1_0: np.ndarray, cfg: ClusterFlowConfig, max_points: int) -> str:
    h = hashlib.sha256()
    for a in (xyz0, xyz1, T_1_0):
        h.update(np.ascontiguousarray(a, np.float32).tobytes())
    h.update(repr((sorted(asdict(cfg).items()), max_points)).encode())
    return h.hexdigest()[:24]


def teacher_labels(xyz0: np.ndarray, xyz1: np.ndarray, T_world_0: np.ndarray, T_world_1: np.ndarray,
                   grid: VoxelGridSpec, cfg: ClusterFlowConfig = ClusterFlowConfig(), max_points: int = 8192,
                   cache_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(points (M, 3), displacement (M, 3))`` float32 in base_link 0 (see the module docstring)."""
    T_0_1 = invert_transform(np.asarray(T_world_0, np.float64)) @ np.asarray(T_world_1, np.float64)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "flow_teacher" / f"{teacher_key(xyz0, xyz1, T_0_1, cfg, max_points)}.npz"
        if path.is_file():
            with np.load(path) as z:
                return z["points"], z["displacement_m"]
    p0 = np.asarray(xyz0, np.float64)
    flow = cluster_rigid_flow(p0, transform_points(T_0_1, np.asarray(xyz1, np.float64)), cfg)
    inside = grid.points_to_voxels(p0)[1]
    moving = inside & (np.linalg.norm(flow, axis=1) > 0)
    rest = np.nonzero(inside & ~moving)[0]
    budget = max(0, max_points - int(moving.sum()))
    if len(rest) > budget:
        rest = rest[np.linspace(0, len(rest) - 1, budget).astype(np.int64)]
    keep = np.sort(np.concatenate([np.nonzero(moving)[0], rest]))
    pts, disp = p0[keep].astype(np.float32), flow[keep].astype(np.float32)
    if path is not None:
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, points=pts, displacement_m=disp)
        write_bytes_atomic(path, buf.getvalue())
    return pts, disp
