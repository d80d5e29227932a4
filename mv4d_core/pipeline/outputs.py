"""The published, typed results of one frame (:class:`PerceptionOutputs`, numpy), in ``frame_id`` =
base_link: what the node publishes, ``mv4d infer`` writes and ``mv4d eval`` scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mv4d_core.geometry.voxel_grid import VoxelGridSpec


@dataclass
class PerceptionOutputs:
    """Published results of one frame.

    * ``occupancy_prob`` (X, Y, Z) float32 in [0, 1], ``occupied`` (X, Y, Z) bool (prob >= threshold),
      ``grid`` the VoxelGridSpec.
    * ``depth_m`` (N, h, w) float32 optical-z metres per camera, ``depth_intrinsics`` (N, 3, 3) for that
      resolution, ``T_base_cam`` (N, 4, 4), ``camera_names``.
    * ``points_xyz`` (P, 3) float32 base_link metres unprojected from ``depth_m``, ``points_rgb`` (P, 3) uint8,
      ``points_camera`` (P,) int16 camera index.
    * ``flow_mps`` (X, Y, Z, 3) float32 m/s along base_link axes; ``motion_prob`` (X, Y, Z) float32
      probability that the voxel content moves.
    """

    stamp_ns: int
    frame_id: str
    grid: VoxelGridSpec
    occupancy_prob: np.ndarray
    occupied: np.ndarray
    camera_names: list[str]
    depth_m: np.ndarray
    depth_intrinsics: np.ndarray
    T_base_cam: np.ndarray
    points_xyz: np.ndarray
    points_rgb: np.ndarray
    points_camera: np.ndarray
    flow_mps: np.ndarray
    motion_prob: np.ndarray | None = None
