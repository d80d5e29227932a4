"""``mv4d convert nuscenes``: nuScenes keyframes -> rosbag2 (one bag per scene).

A rosbag keeps extrinsics on ``/tf_static``, so one bag holds one log's calibration: with several
scenes, ``--out`` becomes a folder with one bag per scene (``OUT/<scene-name>``); with ``--scene``
the bag is written at ``OUT`` itself.
"""

from __future__ import annotations

import argparse

HELP = "convert a dataset (nuscenes) to rosbag2 bags readable by mv4d and ros2 bag play"


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--image-size must look like 800x450, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"--image-size must be positive, got {text!r}")
    return w, h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=("nuscenes",), help="source dataset")
    parser.add_argument("--dataroot", required=True, help="nuScenes folder holding samples/ and <version>/")
    parser.add_argument("--version", default="v1.0-mini", help="table folder name, e.g. v1.0-mini")
    parser.add_argument("--out", required=True, help="bag path (with --scene) or folder of per-scene bags")
    parser.add_argument("--scene", action="append", default=None, help="scene name (repeatable; default all)")
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    parser.add_argument("--image-format", choices=("jpeg", "png", "raw"), default="jpeg")
    parser.add_argument("--image-size", type=_size, default=None, help="resize cameras to WxH (e.g. 800x450)")
    parser.add_argument("--max-frames", type=int, default=None, help="at most this many keyframes per scene")
    parser.add_argument("--backend", choices=("auto", "devkit", "json"), default="auto",
                        help="nuscenes-devkit or direct JSON tables (auto: devkit when it loads)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from mv4d_core.data.nuscenes import NuScenesError, NuScenesReader
    from mv4d_core.data.rosbag_io import write_frames

    try:
        reader = NuScenesReader.open(args.dataroot, args.version, args.backend)
        scenes = args.scene or reader.scene_names
        for s in scenes:
            reader.sample_tokens(s)  # validates the name before anything is written
    except NuScenesError as e:
        print(f"error: {e}")
        return 2
    out = Path(args.out)
    single = len(scenes) == 1 and args.scene is not None
    if out.exists() and (single or any((out / s).exists() for s in scenes)):
        print(f"error: {out} already holds output; choose a new --out")
        return 2
    print(f"nuScenes {args.version} via {reader.backend}: {len(scenes)} scene(s)")
    for name in scenes:
        path = out if single else out / name
        n = len(reader.sample_tokens(name))
        if args.max_frames is not None:
            n = min(n, args.max_frames)
        frames = tqdm(reader.frames([name], args.image_size, args.max_frames), total=n, desc=name, unit="frame")
        path.parent.mkdir(parents=True, exist_ok=True)
        summary = write_frames(path, frames, storage=args.storage, image_format=args.image_format,
                               lidar_frame="LIDAR_TOP", extra={"T_base_lidar": reader.T_base_lidar(name)})
        print(f"{name}: {summary.num_frames} frames -> {summary.path}")
    return 0
