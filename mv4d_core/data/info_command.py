"""``mv4d info BAG``: topics, types, counts, rates and how well cameras (+ LiDAR) synchronize.

The synchronization report replays the header stamps (read from the raw CDR, no image decoding)
of the camera and LiDAR topics through the same ApproximateTime contract as ``read_frames``:
synchronized sets, their stamp spread (min/median/max), messages dropped by queue eviction and
left unmatched — the numbers to pick ``--slop`` from (nuScenes cameras fire across one 50 ms LiDAR
sweep, so their spread approaches 50 ms). It also says where the ego pose comes from (``/tf`` or
odometry, ``world_frame <- base_frame`` of the topic map) or that there is none, in which case
``mv4d infer`` / ``mv4d eval`` run without temporal fusion.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "summarize a rosbag2 (topics, rates) and its camera/LiDAR synchronization"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 folder (sqlite3 or mcap)")
    parser.add_argument("--topic-map", type=Path, default=None,
                        help="topic map YAML: which topics carry which camera / LiDAR / odometry and the frame "
                             "names (default: inferred from the bag)")
    parser.add_argument("--world-frame", default=None, metavar="FRAME",
                        help="fixed frame of the ego pose in /tf or odometry (default: the topic map's, 'map')")
    parser.add_argument("--slop", type=float, default=0.08, help="ApproximateTime slop in seconds (default 0.08)")
    parser.add_argument("--queue-size", type=int, default=10, help="synchronizer queue size per input (default 10)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def bag_info(path: str | Path, topic_map=None, slop_s: float = 0.08, queue_size: int = 10) -> dict[str, Any]:
    """The report as a dict (``topics`` and ``sync``; ``sync`` is ``None`` without camera topics)."""
    import numpy as np

    from rosbags.typesys import Stores, get_typestore

    from mv4d_core.data.approx_sync import ApproximateTimeSynchronizer
    from mv4d_core.data.rosbag_io import (BagError, ReadStats, _deserialize, _iter_messages, _open_reader,
                                          _pick_ego_source, cdr_header_stamp_ns, infer_topic_map)
    from mv4d_core.msgs import MessageError, TFBuffer
    from mv4d_core.msgs.tf import odometry_to_matrix

    path = Path(path)
    reader = _open_reader(path)
    try:
        topics = reader.topics
        try:
            tm = topic_map if topic_map is not None else infer_topic_map(topics)
        except BagError:
            tm = None
        sync_topics: list[str] = []
        if tm is not None:
            sync_topics = [c.image for c in tm.cameras] + ([tm.lidar] if tm.lidar else [])
            missing = [t for t in sync_topics if t not in topics]
            if missing:
                raise BagError(f"{path}: topics {missing} from the topic map are not in the bag; "
                               f"topics: {sorted(topics)} (fix the topic map, --topic-map)")
        index = {t: i for i, t in enumerate(sync_topics)}
        sync = ApproximateTimeSynchronizer(len(sync_topics), queue_size, slop_s).record_sets() if sync_topics else None
        log_times: dict[str, list[int]] = {t: [] for t in topics}
        ts = get_typestore(Stores.ROS2_HUMBLE)
        tf, odom = TFBuffer(), TFBuffer()
        for conn, t_ns, raw in _iter_messages(reader, path, list(reader.connections)):
            log_times[conn.topic].append(t_ns)
            if sync is not None and conn.topic in index:
                sync.add(index[conn.topic], None, cdr_header_stamp_ns(raw, conn.topic))
            elif tm is not None and conn.topic in (tm.tf, tm.tf_static, tm.odometry):
                msg = _deserialize(ts, raw, conn.msgtype, conn.topic)
                try:
                    if conn.topic == tm.odometry:
                        o = odometry_to_matrix(msg)
                        odom.set_transform(o.parent, o.child, o.stamp_ns, o.T)
                    else:
                        tf.add_tf_message(msg, static=conn.topic == tm.tf_static)
                except MessageError:
                    pass  # a broken transform does not make the bag unreadable; read_frames names it
        rows = []
        for topic, info in sorted(topics.items()):
            ts = log_times[topic]
            span = (max(ts) - min(ts)) / 1e9 if len(ts) > 1 else 0.0
            rows.append({"topic": topic, "type": info.msgtype, "count": len(ts),
                         "rate_hz": (len(ts) - 1) / span if span > 0 else None})
        duration_s = reader.duration / 1e9 if reader.message_count else 0.0
        report: dict[str, Any] = {"path": str(path), "duration_s": duration_s,
                                  "message_count": reader.message_count, "topics": rows, "sync": None,
                                  "ego_pose": None}
        if tm is not None:
            import logging

            stats = ReadStats()
            log = logging.getLogger("mv4d_core.data.rosbag_io")
            was, log.disabled = log.disabled, True      # the report says it; no duplicate log line
            try:
                _pick_ego_source(tf, odom, tm, stats)
            finally:
                log.disabled = was
            report["ego_pose"] = {"source": stats.ego_pose_source, "world_frame": tm.world_frame,
                                  "base_frame": tm.base_frame, "note": stats.warnings[0] if stats.warnings else ""}
        if sync is not None:
            c = sync.counters
            spreads = np.asarray(c.spreads_ns, dtype=np.float64) / 1e6
            report["sync"] = {
                "inputs": sync_topics, "slop_s": slop_s, "queue_size": queue_size,
                "synced_sets": c.emitted,
                "spread_ms": ({"min": float(spreads.min()), "median": float(np.median(spreads)),
                               "max": float(spreads.max())} if spreads.size else None),
                "evicted": {t: c.evicted[i] for t, i in index.items()},
                "unmatched_at_end": {t: len(sync.queues[i]) for t, i in index.items()},
                "duplicate_stamps": {t: c.overwritten[i] for t, i in index.items()},
                "partial_arrivals": c.partial_sets,
                # messages of each input that ended up in no synced set; their max is the number of
                # sets lost when all inputs run at the same rate (else it includes the rate surplus)
                "unsynced": {t: c.received[i] - c.emitted for t, i in index.items()},
                "dropped_sets": max(c.received[i] - c.emitted for i in index.values()),
            }
        return report
    finally:
        reader.close()


def format_info(report: dict[str, Any]) -> str:
    lines = [f"bag: {report['path']}  ({report['message_count']} messages, {report['duration_s']:.3f} s)", ""]
    w = max([len(r["topic"]) for r in report["topics"]] + [5])
    lines.append(f"{'topic':<{w}}  {'type':<32} {'count':>7} {'rate Hz':>9}")
    for r in report["topics"]:
        rate = f"{r['rate_hz']:.2f}" if r["rate_hz"] is not None else "-"
        lines.append(f"{r['topic']:<{w}}  {r['type']:<32} {r['count']:>7} {rate:>9}")
    s = report["sync"]
    ego = report.get("ego_pose")
    if ego is not None:
        lines.append("")
        if ego["source"] == "none":
            lines.append(f"ego pose: none -- {ego['note']}")
        else:
            lines.append(f"ego pose: {ego['world_frame']} <- {ego['base_frame']} from {ego['source']}")
    lines.append("")
    if s is None:
        lines.append("sync: no camera topics found (pass --topic-map)")
    else:
        lines.append(f"sync over {len(s['inputs'])} inputs (slop {s['slop_s']} s, queue {s['queue_size']}): "
                     f"{s['synced_sets']} synced sets, {s['dropped_sets']} dropped sets, "
                     f"{s['partial_arrivals']} arrivals without a set")
        if s["spread_ms"]:
            sp = s["spread_ms"]
            lines.append(f"  stamp spread ms: min {sp['min']:.2f}  median {sp['median']:.2f}  max {sp['max']:.2f}")
        lines.append(f"  evicted: {sum(s['evicted'].values())}  unmatched at end: {sum(s['unmatched_at_end'].values())}"
                     f"  duplicate stamps: {sum(s['duplicate_stamps'].values())}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import sys

    from mv4d_core.data.rosbag_io import BagError
    from mv4d_core.data.topic_map import TopicMap, TopicMapError

    try:
        tm = TopicMap.from_yaml(args.topic_map) if args.topic_map else None
        if args.world_frame:
            if tm is None:
                from mv4d_core.data.rosbag_io import _open_reader, infer_topic_map

                reader = _open_reader(Path(args.bag))
                try:
                    tm = infer_topic_map(reader.topics)
                finally:
                    reader.close()
            tm = tm.with_(world_frame=args.world_frame)
        report = bag_info(args.bag, tm, args.slop, args.queue_size)
    except (BagError, TopicMapError) as e:
        print(f"mv4d info: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_info(report))
    return 0
