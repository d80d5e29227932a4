"""The synthetic sensor rig: a nuScenes-like 6-camera ring and a spinning 32-beam LiDAR.

``base_link`` sits on the ground under the rear axle (x forward, y left, z up), like the nuScenes
ego frame. Cameras look outward at the yaw angles of the nuScenes ring (level, no pitch); their
``T_base_cam`` maps the REP 103 optical frame (z forward, x right, y down) to base_link. The LiDAR
frame is axis-aligned with base_link (identity rotation), 1.84 m above the ground.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from mv4d_core.geometry.camera import R_BODY_OPTICAL, PinholeCamera
from mv4d_core.geometry.rig import NUSCENES_CAMERAS, CameraSpec, LidarSpec, Rig
from mv4d_core.geometry.transforms import make_transform

#: (W, H) per camera for each named size.
SIZES: dict[str, tuple[int, int]] = {"tiny": (176, 96), "base": (704, 256)}

# name -> (x, y, z) m in base_link, yaw deg, horizontal field of view deg (nuScenes-like mounting).
_MOUNTS: dict[str, tuple[tuple[float, float, float], float, float]] = {
    "CAM_FRONT_LEFT": ((1.52, 0.49, 1.51), 55.0, 70.0),
    "CAM_FRONT": ((1.70, 0.02, 1.51), 0.0, 70.0),
    "CAM_FRONT_RIGHT": ((1.52, -0.49, 1.51), -55.0, 70.0),
    "CAM_BACK_LEFT": ((1.04, 0.71, 1.56), 110.0, 70.0),
    "CAM_BACK": ((0.03, 0.0, 1.57), 180.0, 110.0),
    "CAM_BACK_RIGHT": ((1.04, -0.71, 1.56), -110.0, 70.0),
}

LIDAR_NAME = "LIDAR_TOP"
LIDAR_XYZ = (0.94, 0.0, 1.84)


@dataclass(frozen=True)
class LidarPattern:
    """Spinning multi-beam LiDAR: ``beams`` rows evenly spaced in elevation, ``azimuth_steps``
    columns over 360 deg, ``max_range_m``. Rays are emitted at one instant (no rolling scan)."""

    beams: int = 32
    azimuth_steps: int = 1024
    elevation_deg: tuple[float, float] = (-30.0, 10.0)
    max_range_m: float = 80.0

    def directions(self) -> np.ndarray:
        """``(beams * azimuth_steps, 3)`` unit directions in the LiDAR frame, beam-major (read-only)."""
        return _directions(self.beams, self.azimuth_steps, self.elevation_deg)


@functools.lru_cache(maxsize=4)
def _directions(beams: int, azimuth_steps: int, elevation_deg: tuple[float, float]) -> np.ndarray:
    """Cached beam directions (the pattern is fixed, so are its rays)."""
    el = np.deg2rad(np.linspace(elevation_deg[0], elevation_deg[1], beams))
    az = np.arange(azimuth_steps) * (2 * np.pi / azimuth_steps)
    e, a = np.meshgrid(el, az, indexing="ij")
    d = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)
    d.setflags(write=False)
    return d


LIDAR_PATTERNS: dict[str, LidarPattern] = {"tiny": LidarPattern(32, 1024), "base": LidarPattern(32, 2048)}


def camera_pose(xyz: tuple[float, float, float], yaw_deg: float) -> np.ndarray:
    """``T_base_cam`` (optical -> base_link) of a level camera at ``xyz`` looking along ``yaw_deg``."""
    y = np.deg2rad(yaw_deg)
    Rz = np.array([[np.cos(y), -np.sin(y), 0.0], [np.sin(y), np.cos(y), 0.0], [0.0, 0.0, 1.0]])
    return make_transform(Rz @ R_BODY_OPTICAL, np.asarray(xyz, dtype=np.float64))


def synthetic_rig(size: str = "tiny") -> Rig:
    """The synthetic rig at ``size`` (``tiny``: 176x96 per camera, ``base``: 704x256), cameras in
    :data:`NUSCENES_CAMERAS` order, with the LiDAR ``LIDAR_TOP``."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    w, h = SIZES[size]
    cams = []
    for name in NUSCENES_CAMERAS:
        xyz, yaw, hfov = _MOUNTS[name]
        cams.append(CameraSpec(name, PinholeCamera.from_fov(hfov, w, h), camera_pose(xyz, yaw), name))
    lidar = LidarSpec(LIDAR_NAME, make_transform(np.eye(3), np.asarray(LIDAR_XYZ)), LIDAR_NAME)
    return Rig(tuple(cams), lidar)
