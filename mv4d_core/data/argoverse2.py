"""Argoverse 2 sensor logs: LiDAR sweeps, ego poses and scene-flow labels (Feather via pyarrow).

Layout of one log folder (``<split>/<log_id>/``)::

    sensors/lidar/<timestamp_ns>.feather   x, y, z (float16, m, ego frame), intensity (uint8),
                                           laser_number (uint8), offset_ns (int32)
    city_SE3_egovehicle.feather            timestamp_ns, qw, qx, qy, qz, tx_m, ty_m, tz_m
    calibration/egovehicle_SE3_sensor.feather
    flow_labels.feather                    (scene-flow extracts) per point of the first sweep

Frames: AV2's ``egovehicle`` frame (x forward, y left, z up) has its origin at the centre of the
rear axle, a wheel radius above the road; mv4d's ``base_link`` is that frame moved down onto the
road (REP 105 / Autoware: origin on the ground under the rear axle), which is where the models'
grids, ground priors and LiDAR origin expect it. The height comes from the log's ground-height map
(``map/*_ground_height_surface____*.npy`` with its ``*___img_Sim2_city.json``) under the first ego
pose, else :data:`NOMINAL_AXLE_HEIGHT_M`. :meth:`Av2Log.frame` is in base_link (points, pose,
LiDAR origin from ``calibration/egovehicle_SE3_sensor.feather``); :meth:`Av2Log.sweep`,
:meth:`Av2Log.T_city_ego` and the labels stay in AV2's ego frame. ``city`` is the world frame.

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


#: Rear-axle height above the road (m) when a log has no ground-height map: what the map of the
#: Argoverse 2 sample log gives under its first pose (0.32 m).
NOMINAL_AXLE_HEIGHT_M = 0.32


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
        #: Height (m) of the ego origin above the road; base_link = ego frame moved down by it.
        self.axle_height_m = self._ground_clearance(self._poses[0])
        self.T_ego_base = np.eye(4)
        self.T_ego_base[2, 3] = -self.axle_height_m
        self.T_base_lidar = self._lidar_in_base()

    def _ground_clearance(self, T_city_ego: np.ndarray) -> float:
        """Ego origin height above the map's ground under it (:data:`NOMINAL_AXLE_HEIGHT_M` without a
        usable map)."""
        import json

        heights = sorted((self.log_dir / "map").glob("*_ground_height_surface____*.npy"))
        sim2 = sorted((self.log_dir / "map").glob("*___img_Sim2_city.json"))
        if not heights or not sim2:
            return NOMINAL_AXLE_HEIGHT_M
        raster = np.load(heights[0]).astype(np.float64)
        t = json.loads(sim2[0].read_text())
        # city metres -> raster pixels (column, row): p_img = s (R p_city + t)
        col, row = float(t["s"]) * (np.asarray(t["R"], np.float64).reshape(2, 2) @ T_city_ego[:2, 3]
                                    + np.asarray(t["t"], np.float64))
        r, c = int(np.floor(row)), int(np.floor(col))
        patch = raster[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
        if patch.size == 0 or not np.isfinite(patch).any():
            return NOMINAL_AXLE_HEIGHT_M
        return float(T_city_ego[2, 3] - np.nanmedian(patch))

    def _lidar_in_base(self) -> np.ndarray | None:
        """``(4, 4)`` base_link -> LiDAR with the mean position of the log's LiDARs (AV2 has two,
        stacked; only the origin is used), or None without a calibration file."""
        path = self.log_dir / "calibration" / "egovehicle_SE3_sensor.feather"
        if not path.is_file():
            return None
        d = _read(path, ("sensor_name", "tx_m", "ty_m", "tz_m"))
        lidar = np.array(["lidar" in str(n) for n in d["sensor_name"]])
        if not lidar.any():
            return None
        T_ego_lidar = np.eye(4)
        T_ego_lidar[:3, 3] = [float(d[k][lidar].mean()) for k in ("tx_m", "ty_m", "tz_m")]
        return invert_transform(self.T_ego_base) @ T_ego_lidar

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
        """A camera-less :class:`FrameRecord` of one sweep in base_link (see the module docstring);
        for the first sweep of a log with labels, ``gt.point_flow_m`` holds the object flow (mv4d
        convention, ego motion removed; a displacement, the same in the ego frame and base_link)."""
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
                           T_world_base=self.T_city_ego(stamp_ns) @ self.T_ego_base,
                           lidar_xyz=transform_points(invert_transform(self.T_ego_base), s.xyz).astype(np.float32),
                           lidar_intensity=s.intensity, lidar_time_offset_s=s.time_offset_s,
                           T_base_lidar=self.T_base_lidar, gt=gt, source=f"av2:{self.log_id}")


def object_flow(xyz0: np.ndarray, flow_with_ego_m: np.ndarray, T_ego1_ego0: np.ndarray) -> np.ndarray:
    """AV2 flow (``p1`` in ego1 minus ``p0`` in ego0) -> object displacement in ego0, ``(P, 3)``."""
    p0 = np.asarray(xyz0, np.float64)
    ego_part = transform_points(T_ego1_ego0, p0) - p0
    return ((np.asarray(flow_with_ego_m, np.float64) - ego_part) @ T_ego1_ego0[:3, :3]).astype(np.float32)
