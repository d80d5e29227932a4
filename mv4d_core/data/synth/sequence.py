"""Synthetic drives as :class:`FrameRecord` sequences with exact :class:`GroundTruth`.

Ground-truth conventions (all exact, from the analytic primitives):

* ``depth_m`` ``(6, H, W)``: optical-z depth of the first surface; ``inf`` = sky (nothing within 150 m).
* ``semantics`` ``(6, H, W)``: class of that surface (:mod:`mv4d_core.data.classes`, ``FREE`` = sky).
* ``occupancy`` / ``voxel_flow_mps``: see :mod:`mv4d_core.data.synth.occupancy`.
* flow convention: velocities are of the object **relative to the world** (ego motion removed),
  expressed in the **current base_link axes**, m/s. Static scenery has zero flow. This is what a
  predicted per-voxel flow is compared against after ego-motion compensation, and what the
  ``point_flow_m`` of the LiDAR points uses: ``point_flow_m = v_world_in_base * dt_s``
  (``point_flow_includes_ego = False``; add the inverse ego motion to get the displacement in
  the next frame's base_link). ``dt_s`` is the frame period, also for the last frame.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from mv4d_core.data.frame import FrameRecord, GroundTruth
from mv4d_core.data.synth.occupancy import occupancy_at
from mv4d_core.data.synth.render import pose_scene, render_sensors
from mv4d_core.data.synth.rig import LIDAR_PATTERNS, synthetic_rig
from mv4d_core.data.synth.world import World, make_world
from mv4d_core.geometry.voxel_grid import TINY, VoxelGridSpec

#: First stamp of every synthetic sequence (2024-01-01T00:00:00Z), ns.
START_STAMP_NS = 1_704_067_200_000_000_000
DEFAULT_DT_S = 0.1


def render_frame(world: World, t: float, size: str = "tiny", grid: VoxelGridSpec | None = TINY,
                 dt_s: float = DEFAULT_DT_S, stamp_ns: int | None = None) -> FrameRecord:
    """One frame of ``world`` at ``t`` seconds after the start (``grid=None`` skips occupancy)."""
    rig = synthetic_rig(size)
    T_wb = world.ego.T_world_base(t)
    shift = np.array([T_wb[0, 3], T_wb[1, 3], 0.0])
    scene = pose_scene(world, t, shift)
    out = render_sensors(scene, rig, LIDAR_PATTERNS[size], T_wb, dt_s)
    images, depth, sem = out["images"], out["depth_m"], out["semantics"]
    xyz, intensity, pflow = out["lidar_xyz"], out["lidar_intensity"], out["point_flow_m"]
    occ = vflow = None
    if grid is not None:
        occ, vflow = occupancy_at(world, t, T_wb, grid)
    gt = GroundTruth(depth_m=depth, semantics=sem, occupancy=occ, occupancy_grid=grid, voxel_flow_mps=vflow,
                     point_flow_m=pflow, point_flow_includes_ego=False)
    stamp = START_STAMP_NS + int(round(t * 1e9)) if stamp_ns is None else int(stamp_ns)
    n = rig.num_cameras
    return FrameRecord(stamp_ns=stamp, camera_names=rig.camera_names, images=images, intrinsics=rig.intrinsics(),
                       T_base_cam=rig.extrinsics(), T_world_base=T_wb, lidar_xyz=xyz, lidar_intensity=intensity,
                       lidar_time_offset_s=np.zeros(len(xyz), np.float32),
                       camera_stamps_ns=np.full(n, stamp, dtype=np.int64), gt=gt, source=f"synth:seed={world.seed}",
                       lidar_ring=out["lidar_ring"], T_base_lidar=rig.lidar.T_base_lidar)


def iter_sequence(num_frames: int, seed: int, size: str = "tiny", grid: VoxelGridSpec | None = TINY,
                  dt_s: float = DEFAULT_DT_S) -> Iterator[FrameRecord]:
    """Frames ``0 .. num_frames-1`` of the drive for ``seed``, ``dt_s`` apart (deterministic)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    world = make_world(seed, duration_s=num_frames * dt_s)
    for i in range(num_frames):
        yield render_frame(world, i * dt_s, size, grid, dt_s)


def generate_sequence(num_frames: int, seed: int, size: str = "tiny", grid: VoxelGridSpec | None = TINY,
                      dt_s: float = DEFAULT_DT_S) -> list[FrameRecord]:
    """``list`` of :func:`iter_sequence`."""
    return list(iter_sequence(num_frames, seed, size, grid, dt_s))
