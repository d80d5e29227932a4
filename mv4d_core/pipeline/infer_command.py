"""``mv4d infer``: run the perception pipeline over a rosbag2 and write a bag with its outputs.

The output bag holds every message of the input bag unchanged (sensor topics, ``/tf``,
``/tf_static``, with their original log times) plus the node's output topics
(``/<node>/output/occupancy``, ``points``, ``flow``, ``occupancy_bev``, ``depth/<cam>`` and its
``camera_info``) stamped with the input stamps, so ``ros2 bag play`` of the result shows in RViz
exactly what the live node would publish (``config/mv4d.rviz`` works unchanged). Frames come from
``read_frames`` (the ApproximateTime contract) and go through the same ``PerceptionPipeline``.

Topics and frames come from the bag's layout (``/<cam>/image_raw``, ...) or a ``--topic-map`` YAML
(any topic names; ``world_frame`` / ``odometry`` say where the ego pose is). A bag without an ego
pose is said so once and processed without temporal fusion (never with identity poses). Every user
error is one line and exit status 2; a failed run removes the half-written output bag.
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
    parser.add_argument("--topic-map", default=None, metavar="YAML",
                        help="which topics carry which camera / LiDAR / odometry and the frame names "
                             "(mv4d_core/data/topic_map.py; default: the layout found in the bag)")
    parser.add_argument("--world-frame", default=None, metavar="FRAME",
                        help="fixed frame of the ego pose in /tf or odometry (default: the topic map's, 'map')")
    parser.add_argument("--node-name", default="mv4d_perception", help="output topics go under /<node-name>/output/")
    parser.add_argument("--no-temporal", action="store_true", help="do not fuse the previous frame")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--storage", default="sqlite3", choices=("sqlite3", "mcap"), help="output bag storage")


def _output_qos():
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.VOLATILE, QosTime(0, 0),
               QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)


def run(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    in_bag, out_bag = Path(args.in_bag), Path(args.out_bag)
    if out_bag.exists():
        print(f"mv4d infer: {out_bag} already exists (rosbag2 writers never overwrite; remove it or pick another "
              "--out)", file=sys.stderr)
        return 2
    try:
        return _run(args, in_bag, out_bag)
    except BaseException as e:
        # Never leave a half-written bag behind: a rerun would refuse to overwrite it.
        if out_bag.exists():
            shutil.rmtree(out_bag, ignore_errors=True)
            if not isinstance(e, KeyboardInterrupt):
                print(f"mv4d infer: removed the incomplete {out_bag}", file=sys.stderr)
        raise


def _temporal_state(args, stats) -> str:
    if args.no_temporal:
        return "off (--no-temporal)"
    if stats.ego_pose_source == "none":
        return "off (no ego pose in the bag)"
    return f"on (ego pose from {stats.ego_pose_source})"


def _run(args: argparse.Namespace, in_bag, out_bag) -> int:
    import numpy as np
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from tqdm import tqdm

    from mv4d_core.data.rosbag_io import ReadStats, _iter_messages, _open_reader, infer_topic_map, read_frames
    from mv4d_core.data.topic_map import TopicMap
    from mv4d_core.engines import create_engine
    from mv4d_core.geometry.rig import Rig
    from mv4d_core.msgs import MsgFactory
    from mv4d_core.pipeline.config import ConfigError, PerceptionConfig
    from mv4d_core.pipeline.messages import output_messages
    from mv4d_core.pipeline.pipeline import OUTPUT_KINDS, FrameError, PerceptionPipeline, output_arrays

    cfg = PerceptionConfig.from_yaml(args.params) if args.params else None
    rig = Rig.from_yaml(args.rig) if args.rig else None
    topic_map = TopicMap.from_yaml(args.topic_map) if args.topic_map else None
    reader = _open_reader(in_bag)
    try:
        topic_map = topic_map or infer_topic_map(reader.topics)
        if args.world_frame:
            topic_map = topic_map.with_(world_frame=args.world_frame)
        first_image = topic_map.cameras[0].image
        total = reader.topics[first_image].msgcount if first_image in reader.topics else 0
    finally:
        reader.close()
    if cfg is not None and list(cfg.camera_names) != topic_map.camera_names:
        raise ConfigError("camera_names", f"{list(cfg.camera_names)} in {args.params} differ from the bag's cameras "
                                          f"{topic_map.camera_names} (fix camera_names or pass --topic-map)")
    stats = ReadStats()
    frames = read_frames(in_bag, topic_map, slop_s=cfg.sync.slop_s if cfg else 0.08,
                         queue_size=cfg.sync.queue_size if cfg else 10, stats=stats, rig=rig)
    first = next(frames, None)
    if first is None:
        print(f"mv4d infer: no synchronized frame in {in_bag} ({stats.summary()}); check the topics with "
              f"`mv4d info {in_bag}` (--topic-map, sync slop)", file=sys.stderr)
        return 2
    if stats.ego_pose_source == "none":
        print(f"mv4d infer: {stats.warnings[0] if stats.warnings else 'no ego pose in the bag'}", file=sys.stderr)
    if cfg is None:
        cfg = PerceptionConfig.from_dict({"camera_names": list(first.camera_names)})
    engine = create_engine(args.engine, args.checkpoint, args.device, lidar=bool(topic_map.lidar))
    try:
        pipeline = PerceptionPipeline(engine, cfg, temporal=not args.no_temporal)
    except ConfigError as e:
        if e.parameter != "camera_names":
            raise
        raise ConfigError("camera_names", f"{str(e).split(': ', 1)[1]}; run it on the cameras it was built for "
                                          "(a --topic-map listing them)") from None
    # Every output the node publishes except the debug markers (RViz-only, capped).
    want = {k for k in OUTPUT_KINDS if k != "markers" and getattr(cfg.publish, k)}
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
        reader = _open_reader(in_bag)
        try:
            conns = {}
            for c in reader.connections:
                qos = getattr(c.ext, "offered_qos_profiles", ()) or ()
                conns[c.id] = writer.add_connection(c.topic, c.msgtype, typestore=ts, offered_qos_profiles=qos)
            for c, t_ns, raw in _iter_messages(reader, in_bag):
                writer.write(conns[c.id], t_ns, raw)
        finally:
            reader.close()
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
              f"median {np.median(timings):.1f} ms; temporal resets {pipeline.stats.resets or 'none'}"
              f"; temporal fusion {_temporal_state(args, stats)}")
    print(f"mv4d infer: wrote {out_bag} with {sum(counts.values())} output messages on {len(counts)} topics")
    return 0 if n else 1
