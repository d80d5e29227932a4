"""Frame records: one synchronized rig sample (cameras + LiDAR + poses + optional ground truth).

Every per-camera array is in the order of ``camera_names`` (the rig order). Frames and units:

* images: ``(N, H, W, 3)`` uint8 RGB.
* ``intrinsics``: ``(N, 3, 3)`` for the stored image size.
* ``T_base_cam``: ``(N, 4, 4)`` optical camera frame -> ``base_link``.
* ``T_world_base``: ``(4, 4)`` ego pose, ``base_link`` -> world (``map``/``odom``) at ``stamp_ns``.
* ``lidar_xyz``: ``(P, 3)`` float32 metres in ``base_link`` (already moved out of the LiDAR frame).
* ``lidar_intensity``, ``lidar_time_offset_s``: ``(P,)`` float32 when the source has them.
* ``T_base_lidar``: ``(4, 4)`` LiDAR frame -> base_link when known (its origin casts free space).
* ``lidar_ring``: ``(P,)`` int16 beam (ring) index of each point when the source has it (nuScenes
  LIDAR_TOP, the synthetic LiDAR, bags whose cloud has a ``ring`` field).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mv4d_core.geometry.camera import PinholeCamera
from mv4d_core.geometry.rig import CameraSpec, LidarSpec, Rig
from mv4d_core.geometry.voxel_grid import VoxelGridSpec


@dataclass
class GroundTruth:
    """Exact labels (synthetic world) or measured references; every field optional.

    * ``depth_m``: ``(N, H, W)`` float32 optical-z depth per camera, ``inf`` where nothing is hit.
    * ``semantics``: ``(N, H, W)`` uint8 class ids per camera (see ``mv4d_core.data.classes``).
    * ``occupancy``: ``(X, Y, Z)`` uint8 class per voxel on ``occupancy_grid``; ``FREE`` = empty.
    * ``voxel_flow_mps``: ``(X, Y, Z, 3)`` float32 velocity of the voxel content relative to the world
      (ego motion removed), expressed in the current base_link axes, m/s.
    * ``point_flow_m``: ``(P, 3)`` float32 displacement of each LiDAR point to the next frame,
      expressed in the current base_link (static points move by the inverse ego motion only
      when ``point_flow_includes_ego``; mv4d stores object motion only by default).
    """

    depth_m: np.ndarray | None = None
    semantics: np.ndarray | None = None
    occupancy: np.ndarray | None = None
    occupancy_grid: VoxelGridSpec | None = None
    voxel_flow_mps: np.ndarray | None = None
    point_flow_m: np.ndarray | None = None
    point_flow_includes_ego: bool = False


@dataclass
class FrameRecord:
    """One synchronized sample of the rig at ``stamp_ns`` (nanoseconds, header stamp)."""

    stamp_ns: int
    camera_names: list[str]
    images: np.ndarray
    intrinsics: np.ndarray
    T_base_cam: np.ndarray
    T_world_base: np.ndarray = field(default_factory=lambda: np.eye(4))
    lidar_xyz: np.ndarray | None = None
    lidar_intensity: np.ndarray | None = None
    lidar_time_offset_s: np.ndarray | None = None
    camera_stamps_ns: np.ndarray | None = None
    gt: GroundTruth | None = None
    source: str = ""
    lidar_ring: np.ndarray | None = None
    T_base_lidar: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.camera_names)
        self.images = np.asarray(self.images)
        if self.images.ndim != 4 or self.images.shape[0] != n or self.images.shape[-1] != 3:
            raise ValueError(f"images must be (N={n}, H, W, 3), got {self.images.shape}")
        if self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 RGB, got {self.images.dtype}")
        self.intrinsics = np.asarray(self.intrinsics, dtype=np.float64)
        self.T_base_cam = np.asarray(self.T_base_cam, dtype=np.float64)
        self.T_world_base = np.asarray(self.T_world_base, dtype=np.float64)
        if self.intrinsics.shape != (n, 3, 3):
            raise ValueError(f"intrinsics must be ({n}, 3, 3), got {self.intrinsics.shape}")
        if self.T_base_cam.shape != (n, 4, 4):
            raise ValueError(f"T_base_cam must be ({n}, 4, 4), got {self.T_base_cam.shape}")
        if self.T_world_base.shape != (4, 4):
            raise ValueError(f"T_world_base must be (4, 4), got {self.T_world_base.shape}")
        if self.lidar_xyz is not None:
            self.lidar_xyz = np.asarray(self.lidar_xyz, dtype=np.float32).reshape(-1, 3)
        for name in ("lidar_intensity", "lidar_time_offset_s", "lidar_ring"):
            v = getattr(self, name)
            if v is not None and (self.lidar_xyz is None or len(v) != len(self.lidar_xyz)):
                raise ValueError(f"{name} must have one entry per LiDAR point "
                                 f"({0 if self.lidar_xyz is None else len(self.lidar_xyz)}), got {len(v)}")
        if self.lidar_ring is not None:
            self.lidar_ring = np.asarray(self.lidar_ring, dtype=np.int16)

    @property
    def num_cameras(self) -> int:
        return len(self.camera_names)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the stored images."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    def rig(self, lidar_name: str | None = None) -> Rig:
        """The rig this frame was taken with (cameras at the stored image size)."""
        h, w = self.image_size
        cams = tuple(CameraSpec(name, PinholeCamera(self.intrinsics[i], w, h), self.T_base_cam[i])
                     for i, name in enumerate(self.camera_names))
        lidar = LidarSpec(lidar_name, np.eye(4)) if lidar_name else None
        return Rig(cams, lidar)
