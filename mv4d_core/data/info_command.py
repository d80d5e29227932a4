"""``mv4d info BAG``: topics, types, counts, rates and how well cameras (+ LiDAR) synchronize.

The synchronization report replays the header stamps (read from the raw CDR, no image decoding)
of the camera and LiDAR topics through the same ApproximateTime contract as ``read_frames``:
synchronized sets, their stamp spread (min/median/max), messages dropped by queue eviction and
left unmatched — the numbers to pick ``--slop`` from (nuScenes cameras fire across one 50 ms LiDAR
sweep, so their spread approaches 50 ms).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "summarize a rosbag2 (topics, rates) and its camera/LiDAR synchronization"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 folder (sqlite3 or mcap)")
    parser.add_argument("--topic-map", type=Path, default=None, help="topic map YAML (default: inferred from the bag)")
    parser.add_argument("--slop", type=float, default=0.08, help="ApproximateTime slop in seconds (default 0.08)")
    parser.add_argument("--queue-size", type=int, default=10, help="synchronizer queue size per input (default 10)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def bag_info(path: str | Path, topic_map=None, slop_s: float = 0.08, queue_size: int = 10) -> dict[str, Any]:
    """The report as a dict (``topics`` and ``sync``; ``sync`` is ``None`` without camera topics)."""
    import numpy as np

    from mv4d_core.data.approx_sync import ApproximateTimeSynchronizer
    from mv4d_core.data.rosbag_io import BagError, _iter_messages, _open_reader, cdr_header_stamp_ns, infer_topic_map

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
                               f"topics: {sorted(topics)}")
        index = {t: i for i, t in enumerate(sync_topics)}
        sync = ApproximateTimeSynchronizer(len(sync_topics), queue_size, slop_s).record_sets() if sync_topics else None
        log_times: dict[str, list[int]] = {t: [] for t in topics}
        for conn, t_ns, raw in _iter_messages(reader, path, list(reader.connections)):
            log_times[conn.topic].append(t_ns)
            if sync is not None and conn.topic in index:
                sync.add(index[conn.topic], None, cdr_header_stamp_ns(raw, conn.topic))
        rows = []
        for topic, info in sorted(topics.items()):
            ts = log_times[topic]
            span = (max(ts) - min(ts)) / 1e9 if len(ts) > 1 else 0.0
            rows.append({"topic": topic, "type": info.msgtype, "count": len(ts),
                         "rate_hz": (len(ts) - 1) / span if span > 0 else None})
        duration_s = reader.duration / 1e9 if reader.message_count else 0.0
        report: dict[str, Any] = {"path": str(path), "duration_s": duration_s,
                                  "message_count": reader.message_count, "topics": rows, "sync": None}
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
        report = bag_info(args.bag, tm, args.slop, args.queue_size)
    except (BagError, TopicMapError) as e:
        print(f"mv4d info: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else format_info(report))
    return 0
