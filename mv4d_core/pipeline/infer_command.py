"""``mv4d infer``: run the perception pipeline over a rosbag2 and write a bag with its outputs.

The output bag holds every message of the input bag unchanged (sensor topics, ``/tf``,
``/tf_static``, with their original log times) plus the node's output topics
(``/<node>/output/occupancy``, ``points``, ``flow``, ``occupancy_bev``, ``depth/<cam>`` and its
``camera_info``) stamped with the input stamps, so ``ros2 bag play`` of the result shows in RViz
exactly what the live node would publish (``config/mv4d.rviz`` works unchanged). Frames come from
``read_frames`` (the ApproximateTime contract) and go through the same ``PerceptionPipeline``.
"""

from __future__ import annotations

import argparse
import sys

HELP = "run the perception pipeline over a rosbag2 and write a bag with the sensor and output topics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="", help="model checkpoint (default: the weights shipped with mv4d)")
    parser.add_argument("--in", dest="in_bag", required=True, help="input rosbag2 folder")
    parser.add_argument("--out", dest="out_bag", required=True, help="output rosbag2 folder (must not exist)")
    parser.add_argument("--engine", default="torch", choices=("torch", "onnxruntime", "tensorrt"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--params", default=None,
                        help="node parameter YAML (e.g. config/mv4d.param.yaml); default: built-in defaults with "
                             "the bag's cameras")
    parser.add_argument("--rig", default=None, help="rig YAML overriding the bag's /tf_static extrinsics")
    parser.add_argument("--node-name", default="mv4d_perception", help="output topics go under /<node-name>/output/")
    parser.add_argument("--no-temporal", action="store_true", help="do not fuse the previous frame")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--storage", default="sqlite3", choices=("sqlite3", "mcap"), help="output bag storage")


def _output_qos():
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.VOLATILE, QosTime(0, 0),
               QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from tqdm import tqdm

    from mv4d_core.data.rosbag_io import ReadStats, infer_topic_map, read_frames
    from mv4d_core.engines import EngineError, create_engine
    from mv4d_core.geometry.rig import Rig, RigError
    from mv4d_core.msgs import MsgFactory
    from mv4d_core.pipeline.config import ConfigError, PerceptionConfig
    from mv4d_core.pipeline.messages import output_messages
    from mv4d_core.pipeline.pipeline import FrameError, PerceptionPipeline, output_arrays

    in_bag, out_bag = Path(args.in_bag), Path(args.out_bag)
    if out_bag.exists():
        print(f"mv4d infer: {out_bag} already exists (rosbag2 writers never overwrite)", file=sys.stderr)
        return 2
    try:
        cfg = PerceptionConfig.from_yaml(args.params) if args.params else None
        rig = Rig.from_yaml(args.rig) if args.rig else None
    except (ConfigError, RigError, OSError) as e:
        print(f"mv4d infer: {e}", file=sys.stderr)
        return 2
    stats = ReadStats()
    try:
        with Reader(in_bag) as reader:
            topic_map = infer_topic_map(reader.topics)
            total = reader.topics[topic_map.cameras[0].image].msgcount
        frames = read_frames(in_bag, topic_map, slop_s=cfg.sync.slop_s if cfg else 0.08,
                             queue_size=cfg.sync.queue_size if cfg else 10, stats=stats, rig=rig)
        first = next(frames, None)
    except Exception as e:  # BagError, or rosbags' own errors for unreadable folders
        print(f"mv4d infer: cannot read {in_bag}: {e}", file=sys.stderr)
        return 2
    if first is None:
        print(f"mv4d infer: no synchronized frame in {in_bag} ({stats.summary()})", file=sys.stderr)
        return 1
    try:
        if cfg is None:
            cfg = PerceptionConfig.from_dict({"camera_names": list(first.camera_names)})
        engine = create_engine(args.engine, args.checkpoint, args.device)
        pipeline = PerceptionPipeline(engine, cfg, temporal=not args.no_temporal)
    except EngineError as e:
        print(f"mv4d infer: {e.for_cli()}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"mv4d infer: {e}", file=sys.stderr)
        return 2
    want = {k for k in ("occupancy", "points", "flow", "depth", "bev") if getattr(cfg.publish, k)}
    optical = {c.name: c.frame_id for c in topic_map.cameras}
    ts = get_typestore(Stores.ROS2_HUMBLE)
    factory = MsgFactory.rosbags()
    plugin = StoragePlugin.SQLITE3 if args.storage == "sqlite3" else StoragePlugin.MCAP
    prefix = f"/{args.node_name}/output/"
    counts: dict[str, int] = {}
    skipped = 0
    timings = []
    with Writer(out_bag, version=8, storage_plugin=plugin) as writer:
        # 1) the input bag, message for message.
        with Reader(in_bag) as reader:
            conns = {}
            for c in reader.connections:
                qos = getattr(c.ext, "offered_qos_profiles", ()) or ()
                conns[c.id] = writer.add_connection(c.topic, c.msgtype, typestore=ts, offered_qos_profiles=qos)
            for c, t_ns, raw in reader.messages():
                writer.write(conns[c.id], t_ns, raw)
        # 2) the outputs, frame by frame.
        out_conns: dict[str, object] = {}

        def frames_iter():
            yield first
            yield from frames

        bar = tqdm(frames_iter(), total=min(total, args.max_frames or total), desc="mv4d infer", unit="frame")
        for i, frame in enumerate(bar):
            if args.max_frames is not None and i >= args.max_frames:
                break
            try:
                out = pipeline.process(frame)
            except FrameError as e:
                skipped += 1
                bar.write(f"frame {frame.stamp_ns} skipped: {e}")
                continue
            timings.append(pipeline.timings.total_ms)
            stamps = (frame.camera_stamps_ns if frame.camera_stamps_ns is not None
                      else np.full(frame.num_cameras, frame.stamp_ns))
            meta = [(optical.get(cam, cam), int(stamps[j])) for j, cam in enumerate(out.camera_names)]
            arrays = output_arrays(out, cfg, want)
            for name, msg in output_messages(arrays, out, frame.stamp_ns, cfg.base_frame, meta, factory):
                topic = prefix + name
                if topic not in out_conns:
                    msgtype = msg.__msgtype__
                    out_conns[topic] = writer.add_connection(topic, msgtype, typestore=ts,
                                                             offered_qos_profiles=[_output_qos()])
                    counts[topic] = 0
                stamp = msg.header.stamp
                writer.write(out_conns[topic], stamp.sec * 1_000_000_000 + stamp.nanosec,
                             ts.serialize_cdr(msg, msg.__msgtype__))
                counts[topic] += 1
    n = len(timings)
    print(f"mv4d infer: {n} frames processed, {skipped} skipped; input: {stats.summary()}")
    if n:
        print(f"mv4d infer: pipeline time per frame mean {np.mean(timings):.1f} ms, "
              f"median {np.median(timings):.1f} ms; temporal resets {pipeline.stats.resets or 'none'}")
    print(f"mv4d infer: wrote {out_bag} with {sum(counts.values())} output messages on {len(counts)} topics")
    return 0 if n else 1
