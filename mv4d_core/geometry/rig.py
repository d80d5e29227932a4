"""Sensor rig: N pinhole cameras and an optional LiDAR, each with its extrinsics to ``base_link``.

Rig YAML format (all keys shown; ``K`` may be 9 numbers row-major or ``{fx, fy, cx, cy}``)::

    base_frame: base_link
    cameras:
      - name: CAM_FRONT            # logical name, used in topics (~/input/CAM_FRONT/image)
        frame_id: CAM_FRONT        # optical frame (REP 103: z forward, x right, y down)
        width: 1600
        height: 900
        K: [1266.4, 0.0, 816.3, 0.0, 1266.4, 491.5, 0.0, 0.0, 1.0]
        T_base_cam:                # optical frame -> base_link
          translation: [1.70, 0.02, 1.51]
          rotation_wxyz: [0.4998, -0.5030, 0.4997, -0.4974]
    lidar:                         # optional
      name: LIDAR_TOP
      frame_id: LIDAR_TOP
      T_base_lidar: {translation: [0.94, 0.0, 1.84], rotation_wxyz: [0.707, 0.0, 0.0, 0.707]}

Errors name the offending field (``cameras[2].K``) so a broken file is fixed in one go.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from mv4d_core.geometry.camera import PinholeCamera
from mv4d_core.geometry.transforms import rotmat_to_quat, transform_from_quat
from mv4d_core.utils.yaml_file import load_yaml_file

#: nuScenes camera order, used by Autoware BEVDet and as mv4d's default ring order.
NUSCENES_CAMERAS = ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT")


class RigError(ValueError):
    """A rig description is invalid; the message names the field."""


@dataclass(frozen=True)
class CameraSpec:
    """One camera: intrinsics plus ``T_base_cam`` (optical frame -> base_link, (4, 4))."""

    name: str
    camera: PinholeCamera
    T_base_cam: np.ndarray
    frame_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "T_base_cam", np.asarray(self.T_base_cam, dtype=np.float64))
        if not self.frame_id:
            object.__setattr__(self, "frame_id", self.name)


@dataclass(frozen=True)
class LidarSpec:
    """The LiDAR: ``T_base_lidar`` (lidar frame -> base_link, (4, 4))."""

    name: str
    T_base_lidar: np.ndarray
    frame_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "T_base_lidar", np.asarray(self.T_base_lidar, dtype=np.float64))
        if not self.frame_id:
            object.__setattr__(self, "frame_id", self.name)


@dataclass(frozen=True)
class Rig:
    """Cameras in a fixed order (the order of every per-camera array in mv4d) and an optional LiDAR."""

    cameras: tuple[CameraSpec, ...]
    lidar: LidarSpec | None = None
    base_frame: str = "base_link"

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise RigError(f"cameras: duplicate camera names {names}")

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @property
    def num_cameras(self) -> int:
        return len(self.cameras)

    def camera(self, name: str) -> CameraSpec:
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(f"rig has no camera {name!r}; cameras are {self.camera_names}")

    def intrinsics(self) -> np.ndarray:
        """``(N, 3, 3)`` camera matrices in rig order."""
        return np.stack([c.camera.K for c in self.cameras])

    def extrinsics(self) -> np.ndarray:
        """``(N, 4, 4)`` ``T_base_cam`` in rig order."""
        return np.stack([c.T_base_cam for c in self.cameras])

    def resized(self, width: int, height: int) -> "Rig":
        """Every camera resized to ``width x height`` (the model's input size)."""
        cams = tuple(CameraSpec(c.name, c.camera.resized(width, height), c.T_base_cam, c.frame_id) for c in self.cameras)
        return Rig(cams, self.lidar, self.base_frame)

    # ----------------------------------------------------------------------------- YAML
    def to_dict(self) -> dict:
        def pose(T: np.ndarray) -> dict:
            return {"translation": [float(x) for x in T[:3, 3]],
                    "rotation_wxyz": [float(x) for x in rotmat_to_quat(T[:3, :3])]}

        d: dict[str, Any] = {"base_frame": self.base_frame, "cameras": []}
        for c in self.cameras:
            d["cameras"].append({"name": c.name, "frame_id": c.frame_id, "width": c.camera.width,
                                 "height": c.camera.height, "K": [float(x) for x in c.camera.K.ravel()],
                                 "T_base_cam": pose(c.T_base_cam)})
        if self.lidar is not None:
            d["lidar"] = {"name": self.lidar.name, "frame_id": self.lidar.frame_id,
                          "T_base_lidar": pose(self.lidar.T_base_lidar)}
        return d

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Rig":
        if not isinstance(d, Mapping):
            raise RigError(f"rig: expected a mapping at the top level, got {type(d).__name__}")
        cams_raw = d.get("cameras")
        if not isinstance(cams_raw, Sequence) or isinstance(cams_raw, str) or len(cams_raw) == 0:
            raise RigError("cameras: expected a non-empty list of cameras")
        cams = []
        for i, c in enumerate(cams_raw):
            where = f"cameras[{i}]"
            if not isinstance(c, Mapping):
                raise RigError(f"{where}: expected a mapping")
            name = _require(c, "name", where)
            if not isinstance(name, str) or not name:
                raise RigError(f"{where}.name: expected a non-empty string")
            width = _positive_int(_require(c, "width", where), f"{where}.width")
            height = _positive_int(_require(c, "height", where), f"{where}.height")
            K = _parse_K(_require(c, "K", where), f"{where}.K")
            try:
                cam = PinholeCamera(K, width, height)
            except ValueError as e:
                raise RigError(f"{where}.K: {e}") from None
            T = _parse_pose(_require(c, "T_base_cam", where), f"{where}.T_base_cam")
            cams.append(CameraSpec(name, cam, T, str(c.get("frame_id") or name)))
        lidar = None
        if d.get("lidar") is not None:
            lr = d["lidar"]
            if not isinstance(lr, Mapping):
                raise RigError("lidar: expected a mapping")
            name = _require(lr, "name", "lidar")
            T = _parse_pose(_require(lr, "T_base_lidar", "lidar"), "lidar.T_base_lidar")
            lidar = LidarSpec(str(name), T, str(lr.get("frame_id") or name))
        return cls(tuple(cams), lidar, str(d.get("base_frame", "base_link")))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Rig":
        return load_yaml_file(path, cls.from_dict, RigError, "rig file")

    @classmethod
    def from_camera_infos(cls, camera_infos: Mapping[str, Any], transforms: Mapping[str, np.ndarray],
                          lidar_frame: str | None = None, base_frame: str = "base_link") -> "Rig":
        """Build a rig from ROS ``CameraInfo`` messages (rclpy or rosbags objects) and resolved TF.

        ``camera_infos`` maps camera name -> CameraInfo (its ``header.frame_id`` is the optical
        frame); ``transforms`` maps frame id -> ``T_base_frame`` (4, 4), e.g. from ``/tf_static``.
        """
        cams = []
        for name, info in camera_infos.items():
            frame = info.header.frame_id
            if frame not in transforms:
                raise RigError(f"camera {name}: no transform base_link <- {frame!r} (known: {sorted(transforms)})")
            K = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
            try:
                cam = PinholeCamera(K, int(info.width), int(info.height), np.asarray(info.d, dtype=np.float64))
            except ValueError as e:
                raise RigError(f"camera {name}: CameraInfo.k: {e}") from None
            cams.append(CameraSpec(name, cam, transforms[frame], frame))
        lidar = None
        if lidar_frame is not None:
            if lidar_frame not in transforms:
                raise RigError(f"lidar: no transform base_link <- {lidar_frame!r}")
            lidar = LidarSpec(lidar_frame, transforms[lidar_frame], lidar_frame)
        return cls(tuple(cams), lidar, base_frame)


def _require(d: Mapping, key: str, where: str):
    if key not in d:
        raise RigError(f"{where}.{key}: missing")
    return d[key]


def _positive_int(v, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
        raise RigError(f"{where}: expected a positive integer, got {v!r}")
    return int(v)


def _floats(v, n: int, where: str) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise RigError(f"{where}: expected {n} numbers, got {v!r}") from None
    if a.size != n:
        raise RigError(f"{where}: expected {n} numbers, got {a.size}")
    if not np.all(np.isfinite(a)):
        raise RigError(f"{where}: values must be finite, got {a.tolist()}")
    return a


def _parse_K(v, where: str) -> np.ndarray:
    if isinstance(v, Mapping):
        missing = [k for k in ("fx", "fy", "cx", "cy") if k not in v]
        if missing:
            raise RigError(f"{where}: missing {missing}")
        fx, fy, cx, cy = (_floats(v[k], 1, f"{where}.{k}")[0] for k in ("fx", "fy", "cx", "cy"))
        return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    return _floats(v, 9, where).reshape(3, 3)


def _parse_pose(v, where: str) -> np.ndarray:
    if not isinstance(v, Mapping):
        return _floats(v, 16, where).reshape(4, 4)
    t = _floats(_require(v, "translation", where), 3, f"{where}.translation")
    q = _floats(_require(v, "rotation_wxyz", where), 4, f"{where}.rotation_wxyz")
    if abs(np.linalg.norm(q) - 1.0) > 1e-3:
        raise RigError(f"{where}.rotation_wxyz: quaternion norm is {np.linalg.norm(q):.4f}, expected 1")
    return transform_from_quat(q, t)
