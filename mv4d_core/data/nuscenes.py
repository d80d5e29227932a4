"""nuScenes keyframes as :class:`FrameRecord` (6 cameras + LIDAR_TOP, calibration, ego poses).

Backends: the official ``nuscenes-devkit`` (``NuScenes(version, dataroot)``) when it is installed
and the folder has every table it needs; otherwise the JSON tables are read directly (the devkit
needs ``log``, ``map``, ``attribute`` and ``visibility`` too, which extracts often lack; this
loader only uses ``scene``, ``sample``, ``sample_data``, ``calibrated_sensor`` and ``ego_pose``).
``NuScenesReader.backend`` says which one ran; ``backend="json"`` forces the fallback.

Frames and conventions of each record:

* ``stamp_ns``: the LIDAR_TOP keyframe timestamp; ``T_world_base``: the ego pose at that stamp
  (nuScenes ``ego`` frame = mv4d ``base_link``; ``world`` = the log's global frame).
* ``lidar_xyz``: LIDAR_TOP points moved into base_link with the LiDAR calibration; intensity (0..255)
  and the ring index (0-31, the 5th field of ``.pcd.bin``) kept.
* cameras in :data:`NUSCENES_CAMERAS` order, uint8 RGB (optionally resized, intrinsics
  follow); ``T_base_cam`` = the camera calibration (optical frame -> ego), constant per log so a
  scene can go to a rosbag's ``/tf_static``. Cameras fire up to ~40 ms away from the LiDAR stamp
  (``camera_stamps_ns`` keeps each one); ``motion_compensate=True`` folds the ego motion between
  the camera and LiDAR stamps into ``T_base_cam`` (better projections, not constant any more).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mv4d_core.data.frame import FrameRecord
from mv4d_core.geometry.camera import PinholeCamera
from mv4d_core.geometry.rig import NUSCENES_CAMERAS, CameraSpec, LidarSpec, Rig
from mv4d_core.geometry.transforms import invert_transform, transform_from_quat, transform_points

LIDAR_CHANNEL = "LIDAR_TOP"
_TABLES = ("scene", "sample", "sample_data", "calibrated_sensor", "ego_pose", "sensor")


class NuScenesError(ValueError):
    """The nuScenes folder is missing something; the message names the table / token / file."""


class _JsonTables:
    """The few nuScenes tables mv4d needs, read straight from ``<dataroot>/<version>/*.json``."""

    def __init__(self, dataroot: Path, version: str):
        root = dataroot / version
        self._rows: dict[str, dict[str, dict]] = {}
        for table in _TABLES:
            path = root / f"{table}.json"
            if not path.is_file():
                raise NuScenesError(f"nuScenes table {table!r} not found at {path}")
            self._rows[table] = {r["token"]: r for r in json.loads(path.read_text())}
        self.scene = list(self._rows["scene"].values())
        self.sample = list(self._rows["sample"].values())
        for sd in self._rows["sample_data"].values():
            cs = self._rows["calibrated_sensor"].get(sd["calibrated_sensor_token"])
            if cs is not None and "channel" not in sd:
                sd["channel"] = self._rows["sensor"][cs["sensor_token"]]["channel"]
        for s in self.sample:  # the devkit adds sample['data'] = {channel: sample_data token}
            s.setdefault("data", {})
        for sd in self._rows["sample_data"].values():
            if sd.get("sample_token") in self._rows["sample"]:
                self._rows["sample"][sd["sample_token"]]["data"].setdefault(sd["channel"], sd["token"])

    def get(self, table: str, token: str) -> dict:
        try:
            return self._rows[table][token]
        except KeyError:
            raise NuScenesError(f"nuScenes {table} token {token!r} not found") from None


def _pose(rec: dict) -> np.ndarray:
    """nuScenes ``translation`` + ``rotation`` ([w, x, y, z]) -> ``(4, 4)``."""
    return transform_from_quat(np.asarray(rec["rotation"], np.float64), np.asarray(rec["translation"], np.float64))


@dataclass
class NuScenesReader:
    """Opens a nuScenes folder and turns keyframes into :class:`FrameRecord` s."""

    dataroot: Path
    version: str
    db: Any
    backend: str

    @classmethod
    def open(cls, dataroot: str | Path, version: str, backend: str = "auto") -> "NuScenesReader":
        """``backend``: ``auto`` (devkit, else JSON), ``devkit`` or ``json``."""
        dataroot = Path(dataroot)
        if not (dataroot / version).is_dir():
            raise NuScenesError(f"no nuScenes tables at {dataroot / version} (check --dataroot / --version)")
        if backend not in ("auto", "devkit", "json"):
            raise ValueError(f"backend must be auto, devkit or json, got {backend!r}")
        if backend in ("auto", "devkit"):
            try:
                from nuscenes.nuscenes import NuScenes

                import contextlib
                import io

                with contextlib.redirect_stdout(io.StringIO()):
                    db = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
                return cls(dataroot, version, db, "devkit")
            except Exception as e:  # noqa: BLE001 - any devkit failure (missing tables, import) -> JSON tables
                if backend == "devkit":
                    raise NuScenesError(f"nuscenes-devkit cannot load {dataroot / version}: {e!r}") from e
        return cls(dataroot, version, _JsonTables(dataroot, version), "json")

    # ------------------------------------------------------------------ index
    @property
    def scene_names(self) -> list[str]:
        return [s["name"] for s in self.db.scene]

    def _scene(self, name: str) -> dict:
        for s in self.db.scene:
            if s["name"] == name:
                return s
        raise NuScenesError(f"scene {name!r} not in {self.dataroot / self.version}; scenes: {self.scene_names}")

    def sample_tokens(self, scene_name: str) -> list[str]:
        """Keyframes of a scene present in the tables, in time order (link fields of extracts may
        point at dropped rows, so the scene is gathered by ``scene_token`` instead of walked)."""
        tok = self._scene(scene_name)["token"]
        samples = sorted((s for s in self.db.sample if s["scene_token"] == tok), key=lambda s: s["timestamp"])
        return [s["token"] for s in samples]

    # ------------------------------------------------------------------ calibration
    def _sample_data(self, sample: dict, channel: str) -> dict:
        try:
            return self.db.get("sample_data", sample["data"][channel])
        except KeyError:
            raise NuScenesError(f"sample {sample['token']} has no {channel} data") from None

    def T_base_lidar(self, scene_name: str) -> np.ndarray:
        """``(4, 4)`` LIDAR_TOP -> ego of the scene's log."""
        sample = self.db.get("sample", self.sample_tokens(scene_name)[0])
        sd = self._sample_data(sample, LIDAR_CHANNEL)
        return _pose(self.db.get("calibrated_sensor", sd["calibrated_sensor_token"]))

    def rig(self, scene_name: str, image_size: tuple[int, int] | None = None) -> Rig:
        """The scene's rig (6 cameras at ``image_size`` (W, H) or native size, plus LIDAR_TOP)."""
        sample = self.db.get("sample", self.sample_tokens(scene_name)[0])
        cams = []
        for ch in NUSCENES_CAMERAS:
            sd = self._sample_data(sample, ch)
            cs = self.db.get("calibrated_sensor", sd["calibrated_sensor_token"])
            cam = PinholeCamera(np.asarray(cs["camera_intrinsic"], np.float64), sd["width"], sd["height"])
            if image_size is not None:
                cam = cam.resized(*image_size)
            cams.append(CameraSpec(ch, cam, _pose(cs), ch))
        return Rig(tuple(cams), LidarSpec(LIDAR_CHANNEL, self.T_base_lidar(scene_name), LIDAR_CHANNEL))

    # ------------------------------------------------------------------ frames
    def frame(self, sample_token: str, image_size: tuple[int, int] | None = None,
              motion_compensate: bool = False) -> FrameRecord:
        """One keyframe as a FrameRecord (``image_size`` = (W, H) to resize the images)."""
        import cv2

        sample = self.db.get("sample", sample_token)
        scene = self.db.get("scene", sample["scene_token"])
        lsd = self._sample_data(sample, LIDAR_CHANNEL)
        T_world_base = _pose(self.db.get("ego_pose", lsd["ego_pose_token"]))
        T_base_lidar = _pose(self.db.get("calibrated_sensor", lsd["calibrated_sensor_token"]))
        pcd_path = self.dataroot / lsd["filename"]
        if not pcd_path.is_file():
            raise NuScenesError(f"LiDAR file {pcd_path} (sample {sample_token}) is missing")
        raw = np.fromfile(pcd_path, dtype=np.float32)
        if raw.size % 5:
            raise NuScenesError(f"{pcd_path}: {raw.size} floats is not a whole number of 5-float points")
        pts = raw.reshape(-1, 5)
        xyz = transform_points(T_base_lidar, pts[:, :3].astype(np.float64)).astype(np.float32)

        images, Ks, Ts, stamps = [], [], [], []
        T_base_world = invert_transform(T_world_base)
        for ch in NUSCENES_CAMERAS:
            sd = self._sample_data(sample, ch)
            cs = self.db.get("calibrated_sensor", sd["calibrated_sensor_token"])
            path = self.dataroot / sd["filename"]
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise NuScenesError(f"camera image {path} ({ch}, sample {sample_token}) is missing or unreadable")
            cam = PinholeCamera(np.asarray(cs["camera_intrinsic"], np.float64), bgr.shape[1], bgr.shape[0])
            if image_size is not None and (cam.width, cam.height) != tuple(image_size):
                bgr = cv2.resize(bgr, tuple(image_size), interpolation=cv2.INTER_AREA)
                cam = cam.resized(*image_size)
            images.append(bgr[..., ::-1])
            Ks.append(cam.K)
            T_ego_cam = _pose(cs)
            if motion_compensate:
                T_world_ego_cam = _pose(self.db.get("ego_pose", sd["ego_pose_token"]))
                T_ego_cam = T_base_world @ T_world_ego_cam @ T_ego_cam
            Ts.append(T_ego_cam)
            stamps.append(int(sd["timestamp"]) * 1000)
        return FrameRecord(
            stamp_ns=int(lsd["timestamp"]) * 1000, camera_names=list(NUSCENES_CAMERAS),
            images=np.ascontiguousarray(np.stack(images)), intrinsics=np.stack(Ks), T_base_cam=np.stack(Ts),
            T_world_base=T_world_base, lidar_xyz=xyz, lidar_intensity=pts[:, 3].copy(),
            camera_stamps_ns=np.asarray(stamps, np.int64), source=f"nuscenes:{scene['name']}:{sample_token}",
            lidar_ring=pts[:, 4].astype(np.int16), T_base_lidar=T_base_lidar)

    def frames(self, scenes: list[str] | None = None, image_size: tuple[int, int] | None = None,
               max_frames: int | None = None, motion_compensate: bool = False) -> Iterator[FrameRecord]:
        """Keyframes of ``scenes`` (default: all, in table order), each scene in time order."""
        n = 0
        for name in scenes or self.scene_names:
            for tok in self.sample_tokens(name):
                if max_frames is not None and n >= max_frames:
                    return
                yield self.frame(tok, image_size, motion_compensate)
                n += 1
