"""``mv4d synth``: render a synthetic drive to a rosbag2 plus its exact ground truth.

Writes ``DIR/bag`` (rosbag2 via :func:`mv4d_core.data.rosbag_io.write_frames`), ``DIR/gt.npz``
(:func:`mv4d_core.data.synth.load_gt_sidecar`), ``DIR/rig.yaml`` and ``DIR/preview.png``
(frame 0: cameras, depth, semantics).
"""

from __future__ import annotations

import argparse

HELP = "render the synthetic street (6 cameras + LiDAR + exact GT) to DIR/bag, DIR/gt.npz, DIR/rig.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (created; DIR/bag must not exist yet)")
    parser.add_argument("--frames", type=int, default=20, help="number of frames (10 Hz)")
    parser.add_argument("--seed", type=int, default=0, help="world seed (same seed -> same drive)")
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3", help="rosbag2 storage plugin")
    parser.add_argument("--size", choices=("tiny", "base"), default="tiny",
                        help="camera size: tiny 176x96, base 704x256 per camera")
    parser.add_argument("--image-format", choices=("raw", "jpeg", "png"), default="raw",
                        help="sensor_msgs/Image (raw) or CompressedImage")
    parser.add_argument("--grid", choices=("tiny", "occ3d"), default="tiny", help="occupancy GT grid")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from mv4d_core.data.rosbag_io import write_frames
    from mv4d_core.data.synth import iter_sequence, synthetic_rig
    from mv4d_core.data.synth.preview import save_preview
    from mv4d_core.data.synth.sidecar import save_gt_arrays
    from mv4d_core.geometry.voxel_grid import OCC3D, TINY

    if args.frames < 1:
        print(f"--frames must be >= 1, got {args.frames}")
        return 2
    out = Path(args.out)
    if (out / "bag").exists():
        print(f"{out / 'bag'} already exists; choose a new --out")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    rig = synthetic_rig(args.size)
    rig.save_yaml(out / "rig.yaml")
    grid = OCC3D if args.grid == "occ3d" else TINY
    stamps, gts = [], []

    def frames():
        for i, frame in enumerate(tqdm(iter_sequence(args.frames, args.seed, args.size, grid), total=args.frames,
                                       desc="synth", unit="frame")):
            if i == 0:
                save_preview(frame, out / "preview.png", scale=2 if args.size == "tiny" else 1)
            stamps.append(frame.stamp_ns)
            gts.append(frame.gt)
            yield frame

    summary = write_frames(out / "bag", frames(), storage=args.storage, image_format=args.image_format,
                           lidar_frame=rig.lidar.frame_id, extra={"T_base_lidar": rig.lidar.T_base_lidar})
    save_gt_arrays(out, stamps, gts)
    print(f"wrote {summary.num_frames} frames to {summary.path} ({args.storage}), ground truth {out / 'gt.npz'}, "
          f"rig {out / 'rig.yaml'}, preview {out / 'preview.png'}")
    return 0
