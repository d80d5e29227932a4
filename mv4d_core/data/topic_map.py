"""Which topics carry which sensor in a bag (or on the live graph), loadable from YAML.

Default layout for cameras ``[CAM_FRONT, ...]``::

    cameras:
      - name: CAM_FRONT
        image: /CAM_FRONT/image_raw            # /CAM_FRONT/image_raw/compressed when compressed
        camera_info: /CAM_FRONT/camera_info
        frame_id: CAM_FRONT                    # optical frame written into headers
    lidar: /lidar/points                       # null = no LiDAR
    lidar_frame: LIDAR_TOP
    tf: /tf
    tf_static: /tf_static
    odometry: null                             # e.g. /odom (nav_msgs/Odometry) as ego-pose source
    base_frame: base_link
    world_frame: map
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from mv4d_core.utils.yaml_file import load_yaml_file


class TopicMapError(ValueError):
    """A topic map is invalid; the message names the field."""


@dataclass(frozen=True)
class CameraTopics:
    name: str
    image: str
    camera_info: str
    frame_id: str = ""

    def __post_init__(self) -> None:
        if not self.frame_id:
            object.__setattr__(self, "frame_id", self.name)


@dataclass(frozen=True)
class TopicMap:
    cameras: tuple[CameraTopics, ...]
    lidar: str | None = "/lidar/points"
    lidar_frame: str = "LIDAR_TOP"
    tf: str = "/tf"
    tf_static: str = "/tf_static"
    odometry: str | None = None
    base_frame: str = "base_link"
    world_frame: str = "map"

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise TopicMapError(f"cameras: duplicate camera names {names}")
        topics = [c.image for c in self.cameras] + [c.camera_info for c in self.cameras]
        if self.lidar:
            topics.append(self.lidar)
        dup = sorted({t for t in topics if topics.count(t) > 1})
        if dup:
            raise TopicMapError(f"topics used twice: {dup}")

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @classmethod
    def default(cls, camera_names: Sequence[str], lidar: bool = True, compressed: bool = False,
                **kwargs: Any) -> "TopicMap":
        suffix = "/image_raw/compressed" if compressed else "/image_raw"
        cams = tuple(CameraTopics(n, f"/{n}{suffix}", f"/{n}/camera_info", n) for n in camera_names)
        return cls(cams, "/lidar/points" if lidar else None, **kwargs)

    def with_(self, **changes: Any) -> "TopicMap":
        return replace(self, **changes)

    # ---------------------------------------------------------------- YAML
    def to_dict(self) -> dict:
        return {"cameras": [{"name": c.name, "image": c.image, "camera_info": c.camera_info, "frame_id": c.frame_id}
                            for c in self.cameras],
                "lidar": self.lidar, "lidar_frame": self.lidar_frame, "tf": self.tf, "tf_static": self.tf_static,
                "odometry": self.odometry, "base_frame": self.base_frame, "world_frame": self.world_frame}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TopicMap":
        if not isinstance(d, Mapping):
            raise TopicMapError(f"topic map: expected a mapping, got {type(d).__name__}")
        unknown = set(d) - {"cameras", "lidar", "lidar_frame", "tf", "tf_static", "odometry", "base_frame",
                            "world_frame"}
        if unknown:
            raise TopicMapError(f"topic map: unknown keys {sorted(unknown)}")
        cams_raw = d.get("cameras")
        if not isinstance(cams_raw, Sequence) or isinstance(cams_raw, str) or not cams_raw:
            raise TopicMapError("cameras: expected a non-empty list")
        cams = []
        for i, c in enumerate(cams_raw):
            if isinstance(c, str):  # shorthand: just the camera name -> default topics
                cams.append(CameraTopics(c, f"/{c}/image_raw", f"/{c}/camera_info", c))
                continue
            if not isinstance(c, Mapping) or not c.get("name"):
                raise TopicMapError(f"cameras[{i}]: expected a mapping with a name")
            n = str(c["name"])
            cams.append(CameraTopics(n, _topic(c.get("image", f"/{n}/image_raw"), f"cameras[{i}].image"),
                                     _topic(c.get("camera_info", f"/{n}/camera_info"), f"cameras[{i}].camera_info"),
                                     str(c.get("frame_id") or n)))
        kw: dict[str, Any] = {}
        for key in ("lidar", "odometry"):
            if key in d:
                kw[key] = None if d[key] in (None, "", False) else _topic(d[key], key)
        for key in ("tf", "tf_static"):
            if key in d:
                kw[key] = _topic(d[key], key)
        for key in ("lidar_frame", "base_frame", "world_frame"):
            if key in d:
                if not isinstance(d[key], str) or not d[key]:
                    raise TopicMapError(f"{key}: expected a non-empty string")
                kw[key] = d[key]
        return cls(tuple(cams), **kw)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TopicMap":
        return load_yaml_file(path, cls.from_dict, TopicMapError, "topic map file")

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _topic(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v.startswith("/") or " " in v:
        raise TopicMapError(f"{where}: expected an absolute topic name like '/cam/image_raw', got {v!r}")
    return v
