"""Data sources as :class:`Sequence` s of :class:`FrameRecord`: ``mv4d synth`` folders (bag +
``gt.npz``), rosbag2 bags (with an optional TopicMap), nuScenes dataroots and synthetic drives
rendered in memory (``synth:SEED:FRAMES``). Used by training, ``mv4d eval`` and the demo."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence as Seq

import numpy as np

from mv4d_core.data.frame import FrameRecord

#: LiDAR height used for free-space ray casting when a source does not say where its LiDAR is.
DEFAULT_LIDAR_ORIGIN_M = (0.0, 0.0, 1.8)


@dataclass
class Sequence:
    """Consecutive frames of one drive. ``lidar_origin_base`` (3,) m: LiDAR position in base_link."""

    name: str
    frames: list[FrameRecord]
    lidar_origin_base: np.ndarray = field(default_factory=lambda: np.asarray(DEFAULT_LIDAR_ORIGIN_M))


# ------------------------------------------------------------------------------------------ sources


def source_kind(path: str | Path) -> str:
    """``synth-memory`` (``synth:SEED:FRAMES``), ``synth`` (folder with ``gt.npz`` and ``bag``),
    ``nuscenes`` (folder holding ``v1.0-*``) or ``bag``."""
    if str(path).startswith("synth:"):
        return "synth-memory"
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"data source {p} does not exist")
    if p.is_dir() and (p / "gt.npz").is_file() and (p / "bag").exists():
        return "synth"
    if p.is_dir() and any(c.is_dir() and c.name.startswith("v1.0-") for c in p.iterdir()):
        return "nuscenes"
    return "bag"


def parse_frame_slice(spec: str | None, n: int) -> list[int]:
    """``"a:b"`` / ``"a:"`` / ``":b"`` / ``"i,j,k"`` -> frame indices within ``0..n-1`` (None = all)."""
    if spec is None or str(spec).strip() == "":
        return list(range(n))
    spec = str(spec).strip()
    if ":" in spec:
        a, b = spec.split(":", 1)
        return list(range(n))[slice(int(a) if a else None, int(b) if b else None)]
    idx = [int(x) for x in spec.split(",") if x.strip()]
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise ValueError(f"frame indices {bad} outside 0..{n - 1}")
    return idx


def _rig_lidar_origin(folder: Path) -> np.ndarray | None:
    rig_path = folder / "rig.yaml"
    if not rig_path.is_file():
        return None
    from mv4d_core.geometry.rig import Rig

    rig = Rig.from_yaml(rig_path)
    return None if rig.lidar is None else np.asarray(rig.lidar.T_base_lidar, np.float64)[:3, 3]


def load_synth_dir(folder: str | Path, topic_map=None) -> Sequence:
    """A ``mv4d synth`` folder: frames from ``DIR/bag`` with ``gt`` attached from ``DIR/gt.npz``."""
    from mv4d_core.data.rosbag_io import read_frames
    from mv4d_core.data.synth import load_gt_sidecar

    folder = Path(folder)
    gts = load_gt_sidecar(folder)
    frames = []
    for f in read_frames(folder / "bag", topic_map):
        if f.stamp_ns not in gts:
            raise ValueError(f"{folder}: frame stamp {f.stamp_ns} has no entry in gt.npz")
        f.gt = gts[f.stamp_ns]
        frames.append(f)
    origin = _rig_lidar_origin(folder)
    return Sequence(folder.name, frames, origin if origin is not None else np.asarray(DEFAULT_LIDAR_ORIGIN_M))


def load_bag(path: str | Path, topic_map=None) -> Sequence:
    from mv4d_core.data.rosbag_io import read_frames

    path = Path(path)
    frames = list(read_frames(path, topic_map))
    origin = _rig_lidar_origin(path.parent if path.is_file() else path)
    return Sequence(path.name, frames, origin if origin is not None else np.asarray(DEFAULT_LIDAR_ORIGIN_M))


def load_nuscenes(dataroot: str | Path, version: str | None, scenes: list[str] | None,
                  image_size: tuple[int, int] | None) -> list[Sequence]:
    """One :class:`Sequence` per scene; images resized to ``image_size`` (W, H) while reading."""
    from mv4d_core.data.nuscenes import NuScenesReader

    dataroot = Path(dataroot)
    if version is None:
        found = sorted(c.name for c in dataroot.iterdir() if c.is_dir() and c.name.startswith("v1.0-"))
        if len(found) != 1:
            raise ValueError(f"{dataroot}: set data.nuscenes_version (found {found})")
        version = found[0]
    reader = NuScenesReader.open(dataroot, version)
    out = []
    for name in scenes or reader.scene_names:
        frames = list(reader.frames([name], image_size))
        out.append(Sequence(name, frames, np.asarray(reader.T_base_lidar(name))[:3, 3]))
    return out


def parse_synth_spec(spec: str) -> tuple[int, int]:
    """``"synth:SEED:FRAMES"`` -> ``(seed, frames)``."""
    parts = str(spec).split(":")
    if len(parts) != 3 or parts[0] != "synth":
        raise ValueError(f"in-memory synthetic source must be 'synth:SEED:FRAMES', got {spec!r}")
    try:
        return int(parts[1]), int(parts[2])
    except ValueError:
        raise ValueError(f"in-memory synthetic source must be 'synth:SEED:FRAMES' with integers, got {spec!r}") from None


def synth_sequence(seed: int, frames: int) -> Sequence:
    """The ``mv4d synth --seed SEED --frames FRAMES`` drive rendered in memory (with GT)."""
    from mv4d_core.data.synth import generate_sequence, synthetic_rig

    rig = synthetic_rig("tiny")
    return Sequence(f"synth-seed{seed}", generate_sequence(int(frames), int(seed)),
                    np.asarray(rig.lidar.T_base_lidar)[:3, 3])


def load_sequences(sources: Seq[str] = (), synth_seeds: Seq[int] = (), synth_frames: int = 12,
                   topic_map: str | None = None, nuscenes_version: str | None = None,
                   nuscenes_scenes: list[str] | None = None, frames: str | None = None,
                   image_size: tuple[int, int] | None = None) -> list[Sequence]:
    """All sequences of ``sources`` (paths or ``synth:SEED:FRAMES``) and of the in-memory drives
    ``synth_seeds`` x ``synth_frames``; ``topic_map`` a TopicMap YAML for bags; ``image_size`` (W, H)
    lets nuScenes resize on read; each sequence cut to ``frames`` (``"a:b"`` or ``"i,j"``)."""
    tm = None
    if topic_map:
        from mv4d_core.data.topic_map import TopicMap

        tm = TopicMap.from_yaml(topic_map)
    seqs = [synth_sequence(seed, synth_frames) for seed in synth_seeds]
    for src in sources:
        kind = source_kind(src)
        if kind == "synth-memory":
            seqs.append(synth_sequence(*parse_synth_spec(src)))
        elif kind == "synth":
            seqs.append(load_synth_dir(src, tm))
        elif kind == "nuscenes":
            seqs.extend(load_nuscenes(src, nuscenes_version, nuscenes_scenes, image_size))
        else:
            seqs.append(load_bag(src, tm))
    for s in seqs:
        keep = parse_frame_slice(frames, len(s.frames))
        s.frames = [s.frames[i] for i in keep]
    return seqs
