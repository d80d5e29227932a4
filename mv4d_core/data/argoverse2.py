"""Argoverse 2 sensor logs: LiDAR sweeps, ego poses and scene-flow labels (Feather via pyarrow).

Layout of one log folder (``<split>/<log_id>/``)::

    sensors/lidar/<timestamp_ns>.feather   x, y, z (float16, m, ego frame), intensity (uint8),
                                           laser_number (uint8), offset_ns (int32)
    city_SE3_egovehicle.feather            timestamp_ns, qw, qx, qy, qz, tx_m, ty_m, tz_m
    calibration/egovehicle_SE3_sensor.feather
    flow_labels.feather                    (scene-flow extracts) per point of the first sweep

Frames: AV2's ``egovehicle`` frame is mv4d's ``base_link`` (x forward, y left, z up, on the
ground at the rear axle); ``city`` is the world frame.

Scene-flow labels: AV2 stores ``flow = p1 - p0`` with ``p0`` in the first sweep's ego frame and
``p1`` in the second's, so static points move by the ego motion (mv4d calls that
``point_flow_includes_ego=True``). :func:`object_flow` removes it:
``m0 = R^T (flow - (T_ego1_ego0 p0 - p0))`` is the object's own displacement expressed in the
first ego frame — mv4d's convention (zero for static points).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mv4d_core.data.frame import FrameRecord, GroundTruth
from mv4d_core.geometry.transforms import invert_transform, transform_from_quat, transform_points


class Av2Error(ValueError):
    """An Argoverse 2 file is missing or malformed; the message names it."""


def _read(path: Path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    import pyarrow.feather as feather

    if not path.is_file():
        raise Av2Error(f"Argoverse 2 file {path} not found")
    table = feather.read_table(path)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise Av2Error(f"{path}: missing columns {missing} (has {table.column_names})")
    return {c: table.column(c).to_numpy() for c in columns}


def find_logs(root: str | Path) -> list[Path]:
    """Every AV2 log folder (holding ``city_SE3_egovehicle.feather``) under ``root``, sorted."""
    return sorted(p.parent for p in Path(root).rglob("city_SE3_egovehicle.feather"))


@dataclass
class LidarSweep:
    """One LiDAR sweep in the ego frame at ``stamp_ns``: ``xyz`` ``(P, 3)`` float32 m,
    ``intensity`` ``(P,)`` float32 0..255, ``laser_number`` ``(P,)`` uint8, ``time_offset_s`` ``(P,)``."""

    stamp_ns: int
    xyz: np.ndarray
    intensity: np.ndarray
    laser_number: np.ndarray
    time_offset_s: np.ndarray


@dataclass
class SceneFlowLabels:
    """Per point of the first sweep: AV2 ``flow_m`` (includes ego motion), ``dynamic``, ``classes``,
    ``is_ground``, and ``T_ego1_ego0`` (first ego frame -> second)."""

    flow_m: np.ndarray
    dynamic: np.ndarray
    classes: np.ndarray
    is_ground: np.ndarray
    T_ego1_ego0: np.ndarray


class Av2Log:
    """One AV2 log folder: sweeps by timestamp, interpolation-free ego poses, flow labels."""

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)
        p = _read(self.log_dir / "city_SE3_egovehicle.feather", ("timestamp_ns", "qw", "qx", "qy", "qz",
                                                                  "tx_m", "ty_m", "tz_m"))
        self._pose_stamps = p["timestamp_ns"].astype(np.int64)
        self._poses = transform_from_quat(np.stack([p["qw"], p["qx"], p["qy"], p["qz"]], -1),
                                          np.stack([p["tx_m"], p["ty_m"], p["tz_m"]], -1))
        lidar_dir = self.log_dir / "sensors" / "lidar"
        self.lidar_stamps = sorted(int(f.stem) for f in lidar_dir.glob("*.feather"))
        if not self.lidar_stamps:
            raise Av2Error(f"no LiDAR sweeps in {lidar_dir}")

    @property
    def log_id(self) -> str:
        return self.log_dir.name

    def T_city_ego(self, stamp_ns: int) -> np.ndarray:
        """``(4, 4)`` ego pose at exactly ``stamp_ns`` (AV2 logs a pose for every sweep)."""
        i = np.searchsorted(self._pose_stamps, stamp_ns)
        if i >= len(self._pose_stamps) or self._pose_stamps[i] != stamp_ns:
            raise Av2Error(f"{self.log_dir.name}: no ego pose at {stamp_ns} ns in city_SE3_egovehicle.feather")
        return self._poses[i]

    def sweep(self, stamp_ns: int) -> LidarSweep:
        d = _read(self.log_dir / "sensors" / "lidar" / f"{stamp_ns}.feather",
                  ("x", "y", "z", "intensity", "laser_number", "offset_ns"))
        xyz = np.stack([d["x"], d["y"], d["z"]], -1).astype(np.float32)
        return LidarSweep(int(stamp_ns), xyz, d["intensity"].astype(np.float32), d["laser_number"].astype(np.uint8),
                          d["offset_ns"].astype(np.float32) * 1e-9)

    def flow_labels(self) -> SceneFlowLabels:
        """Labels of ``flow_labels.feather`` (first sweep -> second sweep)."""
        if len(self.lidar_stamps) < 2:
            raise Av2Error(f"{self.log_dir}: scene flow needs two sweeps, found {len(self.lidar_stamps)}")
        d = _read(self.log_dir / "flow_labels.feather",
                  ("flow_tx_m", "flow_ty_m", "flow_tz_m", "dynamic", "classes", "is_ground_0"))
        t0, t1 = self.lidar_stamps[:2]
        T = invert_transform(self.T_city_ego(t1)) @ self.T_city_ego(t0)
        flow = np.stack([d["flow_tx_m"], d["flow_ty_m"], d["flow_tz_m"]], -1).astype(np.float32)
        return SceneFlowLabels(flow, d["dynamic"].astype(bool), d["classes"].astype(np.uint8),
                               d["is_ground_0"].astype(bool), T)

    def frame(self, stamp_ns: int, with_flow: bool = True) -> FrameRecord:
        """A camera-less :class:`FrameRecord` of one sweep; for the first sweep of a log with
        labels, ``gt.point_flow_m`` holds the object flow (mv4d convention, ego motion removed)."""
        s = self.sweep(stamp_ns)
        gt = None
        if with_flow and stamp_ns == self.lidar_stamps[0] and (self.log_dir / "flow_labels.feather").is_file():
            labels = self.flow_labels()
            if len(labels.flow_m) != len(s.xyz):
                raise Av2Error(f"{self.log_dir}: {len(labels.flow_m)} flow labels for {len(s.xyz)} points")
            gt = GroundTruth(point_flow_m=object_flow(s.xyz, labels.flow_m, labels.T_ego1_ego0),
                             point_flow_includes_ego=False)
        return FrameRecord(stamp_ns=int(stamp_ns), camera_names=[], images=np.zeros((0, 1, 1, 3), np.uint8),
                           intrinsics=np.zeros((0, 3, 3)), T_base_cam=np.zeros((0, 4, 4)),
                           T_world_base=self.T_city_ego(stamp_ns), lidar_xyz=s.xyz, lidar_intensity=s.intensity,
                           lidar_time_offset_s=s.time_offset_s, gt=gt, source=f"av2:{self.log_id}")


def object_flow(xyz0: np.ndarray, flow_with_ego_m: np.ndarray, T_ego1_ego0: np.ndarray) -> np.ndarray:
    """AV2 flow (``p1`` in ego1 minus ``p0`` in ego0) -> object displacement in ego0, ``(P, 3)``."""
    p0 = np.asarray(xyz0, np.float64)
    ego_part = transform_points(T_ego1_ego0, p0) - p0
    return ((np.asarray(flow_with_ego_m, np.float64) - ego_part) @ T_ego1_ego0[:3, :3]).astype(np.float32)
