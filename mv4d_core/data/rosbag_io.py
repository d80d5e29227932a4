"""FrameRecords <-> rosbag2 (sqlite3 or MCAP) through ``rosbags`` (no ROS installation needed).

Bag layout written by :func:`write_frames` (topics from :class:`TopicMap`, default shown):

=====================================  ===============================  ====================================
topic                                  type                             content
=====================================  ===============================  ====================================
``/<cam>/image_raw``                   ``sensor_msgs/Image`` rgb8       ``image_format="raw"``
``/<cam>/image_raw/compressed``        ``sensor_msgs/CompressedImage``  ``image_format="jpeg"|"png"``
``/<cam>/camera_info``                 ``sensor_msgs/CameraInfo``       one per image, same stamp
``/lidar/points``                      ``sensor_msgs/PointCloud2``      x,y,z,intensity[,t] FLOAT32 in the
                                                                        LiDAR frame (``lidar_frame``)
``/tf_static``                         ``tf2_msgs/TFMessage``           base_link -> every camera optical
                                                                        frame and -> lidar_frame; written
                                                                        once, TRANSIENT_LOCAL / RELIABLE /
                                                                        KEEP_LAST 1
``/tf``                                ``tf2_msgs/TFMessage``           world_frame -> base_link per frame
``/odom`` (only if topic map says)     ``nav_msgs/Odometry``            the same ego pose
=====================================  ===============================  ====================================

Header frame ids: images and CameraInfo use the camera's optical frame (``CameraTopics.frame_id``,
default the camera name). Stamps: images use ``camera_stamps_ns`` when present, else the frame
stamp; LiDAR, /tf and odometry use the frame stamp; the bag log time equals the header stamp.
The LiDAR cloud is stored in ``lidar_frame``: ``FrameRecord.lidar_xyz`` is in base_link, so it is
moved by ``inv(T_base_lidar)`` (``extra["T_base_lidar"]``, default identity = the LiDAR frame
coincides with base_link, which keeps the points bit-exact).

:func:`read_frames` resolves extrinsics from /tf_static (or a given :class:`Rig`), intrinsics from
the latest CameraInfo at or before each image, the ego pose ``world_frame <- base_frame`` of the topic
map from /tf (interpolated) or Odometry (a bag with neither is said so once and its frames carry a
NaN ``T_world_base``: unknown, never identity, so the pipeline fuses nothing across them),
moves LiDAR points into base_link and synchronizes cameras (+ LiDAR) with the message_filters
ApproximateTime contract. Everything dropped is counted in :class:`ReadStats`.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from mv4d_core.data.approx_sync import ApproximateTimeSynchronizer
from mv4d_core.data.frame import FrameRecord
from mv4d_core.data.topic_map import CameraTopics, TopicMap
from mv4d_core.geometry.camera import PinholeCamera
from mv4d_core.geometry.rig import Rig
from mv4d_core.geometry.transforms import invert_transform, transform_points
from mv4d_core.msgs.camera_info import camera_info_to_camera, camera_to_camera_info
from mv4d_core.msgs.errors import MessageError, TransformError
from mv4d_core.msgs.factory import MsgFactory
from mv4d_core.msgs.image import compressed_to_rgb, image_to_rgb, rgb_to_compressed, rgb_to_image
from mv4d_core.msgs.pointcloud2 import read_xyz, xyz_to_pointcloud2
from mv4d_core.msgs.stamps import stamp_to_ns
from mv4d_core.msgs.tf import (StampedTransform, TFBuffer, make_tf_message, matrix_to_odometry,
                               odometry_to_matrix)

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
ODOMETRY = "nav_msgs/msg/Odometry"
STORAGES = ("sqlite3", "mcap")


class BagError(RuntimeError):
    """A bag cannot be written or read; the message names the bag, topic and/or field."""


@dataclass
class BagSummary:
    """What :func:`write_frames` wrote."""

    path: Path
    storage: str
    version: int
    num_frames: int
    topics: dict[str, str]            # topic -> message type
    message_counts: dict[str, int]    # topic -> messages written
    start_ns: int | None = None
    end_ns: int | None = None


@dataclass
class ReadStats:
    """Counters of one :func:`read_frames` pass (every drop is counted here and logged)."""

    messages: dict[str, int] = field(default_factory=dict)          # sync-input messages read per topic
    frames: int = 0                                                   # FrameRecords yielded
    sets_emitted: int = 0                                             # synchronized sets
    evicted: dict[str, int] = field(default_factory=dict)            # dropped by queue overflow
    duplicate_stamps: dict[str, int] = field(default_factory=dict)   # replaced by an equal stamp
    out_of_order: dict[str, int] = field(default_factory=dict)       # header stamp went backwards
    unmatched_at_end: dict[str, int] = field(default_factory=dict)   # still queued when the bag ended
    partial_arrivals: int = 0      # arrivals that completed no set (normal for all but one message per set)
    dropped_tf: int = 0                                               # sets without a resolvable pose
    dropped_size_mismatch: int = 0                                    # image size != CameraInfo size
    nonfinite_points: int = 0                                         # NaN/inf LiDAR rows removed
    spreads_ns: list[int] = field(default_factory=list)              # stamp spread of each set
    ego_pose_source: str = ""                                         # "tf" | "odometry" | "none"
    warnings: list[str] = field(default_factory=list)

    @property
    def unsynced(self) -> dict[str, int]:
        """Messages per sync topic that ended in no synchronized set."""
        return {t: n - self.sets_emitted for t, n in self.messages.items()}

    @property
    def dropped_sets(self) -> int:
        """Sets lost, when all sync inputs share one rate (else it includes the faster input's surplus)."""
        return max(self.unsynced.values(), default=0)

    @property
    def dropped_messages(self) -> int:
        return sum(self.evicted.values()) + sum(self.duplicate_stamps.values()) + sum(self.unmatched_at_end.values())

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        log.warning(text)

    def summary(self) -> str:
        s = np.asarray(self.spreads_ns, dtype=np.float64) / 1e6
        spread = (f"spread ms min/median/max {s.min():.1f}/{np.median(s):.1f}/{s.max():.1f}" if s.size
                  else "no sets")
        return (f"{self.frames} frames from {self.sets_emitted} synchronized sets ({self.dropped_sets} sets lost); "
                f"{spread}; dropped messages "
                f"{self.dropped_messages} (evicted {sum(self.evicted.values())}, duplicate stamps "
                f"{sum(self.duplicate_stamps.values())}, unmatched {sum(self.unmatched_at_end.values())}); "
                f"sets dropped: tf {self.dropped_tf}, size {self.dropped_size_mismatch}; non-finite points "
                f"{self.nonfinite_points}; ego pose from {self.ego_pose_source or '?'}")


# ============================================================================ helpers
def _typestore(extra: Mapping[str, Any]):
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(extra.get("store", Stores.ROS2_HUMBLE))


def _qos(durability: str = "volatile", depth: int = 10):
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE,
               QosDurability.TRANSIENT_LOCAL if durability == "transient_local" else QosDurability.VOLATILE,
               QosTime(0, 0), QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)


def cdr_header_stamp_ns(raw, topic: str = "?") -> int:
    """Header stamp (ns) read straight from a CDR message that starts with ``std_msgs/Header``
    (Image, CompressedImage, PointCloud2, CameraInfo, Odometry) without deserializing it."""
    buf = bytes(raw[:12])
    if len(buf) < 12:
        raise BagError(f"{topic}: message of {len(raw)} bytes is too short to hold a header stamp")
    endian = "<" if buf[1] & 1 else ">"  # CDR encapsulation id: 0x0001 little endian, 0x0000 big endian
    sec, nsec = struct.unpack(endian + "iI", buf[4:12])
    if nsec >= 1_000_000_000:
        raise BagError(f"{topic}: header.stamp.nanosec {nsec} out of range (corrupt message?)")
    return sec * 1_000_000_000 + nsec


def _storage_plugin(storage: str):
    from rosbags.rosbag2 import StoragePlugin

    if storage not in STORAGES:
        raise BagError(f"storage must be one of {STORAGES}, got {storage!r}")
    return StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP


# ============================================================================ writing
def write_frames(path: str | Path, frames: Iterable[FrameRecord], topic_map: TopicMap | None = None,
                 storage: str = "sqlite3", version: int = 8, image_format: str = "raw",
                 lidar_frame: str = "LIDAR_TOP", world_frame: str = "map",
                 extra: Mapping[str, Any] | None = None) -> BagSummary:
    """Write ``frames`` to a new rosbag2 at ``path`` (layout in the module docstring).

    ``topic_map`` defaults to ``TopicMap.default(camera_names, lidar=<first frame has points>,
    compressed=image_format != "raw")`` with ``lidar_frame``/``world_frame``; a given map's own
    frames are used otherwise. ``extra``: ``T_base_lidar`` (4, 4), ``store`` (rosbags ``Stores``),
    ``jpeg_quality`` (int). Extrinsics must be identical in every frame (they go to /tf_static).
    """
    from rosbags.rosbag2 import Writer, WriterError

    extra = dict(extra or {})
    path = Path(path)
    if version not in (8, 9):
        raise BagError(f"bag version must be 8 or 9, got {version}")
    if image_format not in ("raw", "jpeg", "png"):
        raise BagError(f"image_format must be raw, jpeg or png, got {image_format!r}")
    plugin = _storage_plugin(storage)
    if path.exists():
        raise BagError(f"{path} already exists; rosbag2 writers never overwrite")
    ts = _typestore(extra)
    factory = MsgFactory.rosbags(extra.get("store"))
    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        raise BagError("write_frames got no frames") from None
    if topic_map is None:
        topic_map = TopicMap.default(first.camera_names, lidar=first.lidar_xyz is not None,
                                     compressed=image_format != "raw", lidar_frame=lidar_frame,
                                     world_frame=world_frame)
    if topic_map.camera_names != list(first.camera_names):
        raise BagError(f"topic map cameras {topic_map.camera_names} != frame cameras {list(first.camera_names)}")
    T_base_lidar = np.asarray(extra.get("T_base_lidar", np.eye(4)), dtype=np.float64)
    T_lidar_base = None if np.array_equal(T_base_lidar, np.eye(4)) else invert_transform(T_base_lidar)
    img_type = IMAGE if image_format == "raw" else COMPRESSED
    quality = int(extra.get("jpeg_quality", 95))

    counts: dict[str, int] = {}
    types: dict[str, str] = {}
    writer = Writer(path, version=version, storage_plugin=plugin)
    try:
        writer.open()
    except WriterError as e:
        raise BagError(f"{path}: cannot create bag: {e}") from None
    conns: dict[str, Any] = {}

    def connect(topic: str, msgtype: str, qos) -> None:
        conns[topic] = writer.add_connection(topic, msgtype, typestore=ts, offered_qos_profiles=[qos])
        types[topic] = msgtype
        counts[topic] = 0

    def put(topic: str, msg, stamp_ns: int) -> None:
        writer.write(conns[topic], int(stamp_ns), ts.serialize_cdr(msg, types[topic]))
        counts[topic] += 1

    num = 0
    start = end = None
    try:
        for cam in topic_map.cameras:
            connect(cam.image, img_type, _qos())
            connect(cam.camera_info, CAMERA_INFO, _qos())
        if topic_map.lidar:
            connect(topic_map.lidar, POINTCLOUD2, _qos())
        connect(topic_map.tf_static, TF_MESSAGE, _qos("transient_local", 1))
        connect(topic_map.tf, TF_MESSAGE, _qos(depth=100))
        if topic_map.odometry:
            connect(topic_map.odometry, ODOMETRY, _qos())
        T_base_cam0 = first.T_base_cam.copy()
        statics = [StampedTransform(topic_map.base_frame, c.frame_id, first.stamp_ns, T_base_cam0[i])
                   for i, c in enumerate(topic_map.cameras)]
        if topic_map.lidar:
            statics.append(StampedTransform(topic_map.base_frame, topic_map.lidar_frame, first.stamp_ns, T_base_lidar))
        put(topic_map.tf_static, make_tf_message(statics, factory=factory), first.stamp_ns)

        for frame in _chain(first, it):
            if list(frame.camera_names) != topic_map.camera_names:
                raise BagError(f"frame {frame.stamp_ns}: cameras {frame.camera_names} differ from "
                               f"{topic_map.camera_names}")
            if not np.allclose(frame.T_base_cam, T_base_cam0, atol=1e-9, rtol=0):
                bad = [topic_map.cameras[i].name for i in range(frame.num_cameras)
                       if not np.allclose(frame.T_base_cam[i], T_base_cam0[i], atol=1e-9, rtol=0)]
                raise BagError(f"frame {frame.stamp_ns}: T_base_cam of {bad} changed; extrinsics go to /tf_static "
                               f"and must be constant")
            stamp = int(frame.stamp_ns)
            cam_stamps = (np.full(frame.num_cameras, stamp, np.int64) if frame.camera_stamps_ns is None
                          else np.asarray(frame.camera_stamps_ns, np.int64))
            h, w = frame.image_size
            for i, cam in enumerate(topic_map.cameras):
                cs = int(cam_stamps[i])
                if image_format == "raw":
                    msg = rgb_to_image(frame.images[i], cs, cam.frame_id, factory=factory)
                else:
                    msg = rgb_to_compressed(frame.images[i], cs, cam.frame_id, factory=factory, format=image_format,
                                            jpeg_quality=quality)
                put(cam.image, msg, cs)
                put(cam.camera_info, camera_to_camera_info(PinholeCamera(frame.intrinsics[i], w, h), cs, cam.frame_id,
                                                           factory=factory), cs)
            if topic_map.lidar and frame.lidar_xyz is not None:
                pts = (frame.lidar_xyz if T_lidar_base is None
                       else transform_points(T_lidar_base, frame.lidar_xyz.astype(np.float64)))
                extras = {}
                if frame.lidar_intensity is not None:
                    extras["intensity"] = np.asarray(frame.lidar_intensity, np.float32)
                if frame.lidar_time_offset_s is not None:
                    extras["t"] = np.asarray(frame.lidar_time_offset_s, np.float32)
                if frame.lidar_ring is not None:
                    extras["ring"] = np.asarray(frame.lidar_ring, np.uint16)
                cloud = xyz_to_pointcloud2(pts, stamp, topic_map.lidar_frame, extra=extras, factory=factory)
                put(topic_map.lidar, cloud, stamp)
            tf = StampedTransform(topic_map.world_frame, topic_map.base_frame, stamp, frame.T_world_base)
            put(topic_map.tf, make_tf_message([tf], factory=factory), stamp)
            if topic_map.odometry:
                put(topic_map.odometry, matrix_to_odometry(frame.T_world_base, topic_map.world_frame,
                                                           topic_map.base_frame, stamp, factory=factory), stamp)
            lo, hi = min(stamp, int(cam_stamps.min())), max(stamp, int(cam_stamps.max()))
            start = lo if start is None else min(start, lo)
            end = hi if end is None else max(end, hi)
            num += 1
    except BaseException:
        writer.close()
        raise
    writer.close()
    return BagSummary(path, storage, version, num, types, counts, start, end)


def _chain(first, rest):
    yield first
    yield from rest


# ============================================================================ reading
def _open_reader(path: Path):
    from rosbags.rosbag2 import Reader

    if not path.exists():
        raise BagError(f"bag {path} does not exist (give a rosbag2 folder or its .db3/.mcap file)")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as e:  # rosbags raises ReaderError, sqlite/mcap errors, YAML errors ... for broken bags
        text = f"{type(e).__name__}: {e}"
        if "metadata" in str(e).lower():
            fix = f"its metadata.yaml is missing or unreadable: rebuild it with `ros2 bag reindex {path}`"
        else:
            fix = _CORRUPT_FIX
        raise BagError(f"{path}: cannot open bag ({text}); {fix}") from e
    return reader


#: What to do about a bag whose storage file is damaged (an interrupted recording, a partial copy).
_CORRUPT_FIX = ("the bag is truncated or corrupt (an interrupted recording or copy): copy it again, or repair it "
                "(MCAP: `mcap recover`; sqlite3: `sqlite3 FILE.db3 .recover`)")


def _iter_messages(reader, path: Path, connections=None):
    gen = reader.messages(connections=connections) if connections is not None else reader.messages()
    n = 0
    while True:
        try:
            item = next(gen)
        except StopIteration:
            return
        except Exception as e:  # truncated/corrupt storage surfaces here, mid-iteration
            raise BagError(f"{path}: reading failed after {n} messages ({type(e).__name__}: {e}); "
                           f"{_CORRUPT_FIX}") from e
        n += 1
        yield item


def infer_topic_map(topics: Mapping[str, Any]) -> TopicMap:
    """A topic map guessed from a bag written with the default layout (camera order = connection order)."""
    cams: list[CameraTopics] = []
    conns = sorted(((min(c.id for c in info.connections), t, info.msgtype) for t, info in topics.items()))
    for _, topic, msgtype in conns:
        for suffix in ("/image_raw", "/image_raw/compressed"):
            if topic.endswith(suffix) and msgtype in (IMAGE, COMPRESSED) and topic.count("/") == suffix.count("/") + 1:
                name = topic[1:-len(suffix)]
                cams.append(CameraTopics(name, topic, f"/{name}/camera_info", name))
    if not cams:
        raise BagError(f"no camera topics like /<cam>/image_raw in the bag (topics: {sorted(topics)}); "
                       "name the bag's camera topics in a topic map (--topic-map, see mv4d_core/data/topic_map.py)")
    return TopicMap(tuple(cams), "/lidar/points" if "/lidar/points" in topics else None,
                    odometry="/odom" if "/odom" in topics else None)


def _deserialize(ts, raw, msgtype: str, topic: str):
    try:
        return ts.deserialize_cdr(raw, msgtype)
    except Exception as e:
        raise BagError(f"{topic}: cannot deserialize {msgtype} ({type(e).__name__}: {e})") from e


def read_frames(path: str | Path, topic_map: TopicMap | None = None, slop_s: float = 0.08, queue_size: int = 10,
                stats: ReadStats | None = None, rig: Rig | None = None) -> Iterator[FrameRecord]:
    """Yield synchronized :class:`FrameRecord` s from a rosbag2 (sqlite3 or MCAP).

    ``topic_map`` defaults to the layout found in the bag (:func:`infer_topic_map`). ``rig``
    overrides /tf_static extrinsics (intrinsics still come from CameraInfo). Frame stamp = LiDAR
    stamp when LiDAR is synced, else the first camera's. Missing topics / CameraInfo / static
    extrinsics, unknown encodings and corrupt storage raise :class:`BagError` naming the topic;
    per-set problems (no ego pose at that stamp, image size != CameraInfo) drop the set and count it.
    """
    from rosbags.typesys import Stores, get_typestore

    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    ts = get_typestore(Stores.ROS2_HUMBLE)
    reader = _open_reader(path)
    # Validation and the state pass run now (not at the first next()), so bad bags fail at the call.
    try:
        topics = reader.topics
        tm = topic_map if topic_map is not None else infer_topic_map(topics)
        _check_topics(path, topics, tm)
        tf, ego, infos = _read_state(path, reader, ts, topics, tm, stats)
    except BaseException:
        reader.close()
        raise
    return _sync_frames(path, reader, ts, tm, tf, ego, infos, rig, slop_s, queue_size, stats)


def _read_state(path: Path, reader, ts, topics, tm: TopicMap, stats: ReadStats):
    """Pass 1: TF, odometry and CameraInfo (small messages) into buffers."""
    tf = TFBuffer()
    odom = TFBuffer()
    infos: dict[str, list[tuple[int, PinholeCamera, str]]] = {c.camera_info: [] for c in tm.cameras}
    state_topics = [t for t in (tm.tf_static, tm.tf, tm.odometry, *infos) if t and t in topics]
    state_conns = [c for c in reader.connections if c.topic in state_topics]
    for conn, _, raw in _iter_messages(reader, path, state_conns):
        msg = _deserialize(ts, raw, conn.msgtype, conn.topic)
        try:
            if conn.topic == tm.tf_static:
                tf.add_tf_message(msg, static=True)
            elif conn.topic == tm.tf:
                tf.add_tf_message(msg)
            elif conn.topic == tm.odometry:
                o = odometry_to_matrix(msg)
                odom.set_transform(o.parent, o.child, o.stamp_ns, o.T)
            else:
                cam, frame_id = camera_info_to_camera(msg)
                infos[conn.topic].append((stamp_to_ns(msg.header.stamp), cam, frame_id))
        except MessageError as e:
            raise BagError(f"{path}: {conn.topic}: {e}") from e
    for topic, lst in infos.items():
        if not lst:
            raise BagError(f"{path}: no CameraInfo messages on {topic}: the intrinsics are missing (record the "
                           f"camera_info topics, or name them in a topic map: cameras[].camera_info)")
        lst.sort(key=lambda x: x[0])
    return tf, _pick_ego_source(tf, odom, tm, stats), infos


def _sync_frames(path: Path, reader, ts, tm: TopicMap, tf: TFBuffer, ego: TFBuffer | None, infos: dict,
                 rig: Rig | None, slop_s: float, queue_size: int, stats: ReadStats) -> Iterator[FrameRecord]:
    """Pass 2: synchronize images (+ LiDAR) on header stamps read from the raw CDR; only emitted
    sets are deserialized."""
    try:
        sync_topics = [c.image for c in tm.cameras] + ([tm.lidar] if tm.lidar else [])
        index = {t: i for i, t in enumerate(sync_topics)}
        sync = ApproximateTimeSynchronizer(len(sync_topics), queue_size, slop_s)
        by_topic = {c.topic: c for c in reader.connections}
        last: dict[str, int] = {}
        for t in sync_topics:
            stats.messages.setdefault(t, 0)
        for conn, _, raw in _iter_messages(reader, path, [by_topic[t] for t in sync_topics]):
            topic = conn.topic
            stamp = cdr_header_stamp_ns(raw, topic)
            stats.messages[topic] += 1
            if topic in last and stamp < last[topic]:
                stats.out_of_order[topic] = stats.out_of_order.get(topic, 0) + 1
            last[topic] = max(stamp, last.get(topic, stamp))
            out = sync.add(index[topic], (conn.msgtype, raw), stamp)
            if out is None:
                continue
            stats.sets_emitted += 1
            stats.spreads_ns.append(sync.counters.spreads_ns[-1])
            frame = _build_frame(path, ts, tm, out, rig, tf, ego, infos, stats)
            if frame is not None:
                stats.frames += 1
                yield frame
        c = sync.counters
        for t, i in index.items():
            stats.evicted[t] = c.evicted[i]
            stats.duplicate_stamps[t] = c.overwritten[i]
            stats.unmatched_at_end[t] = len(sync.queues[i])
        stats.partial_arrivals = c.partial_sets
        if stats.dropped_messages:
            log.info("%s: %s", path, stats.summary())
    finally:
        reader.close()


def _check_topics(path: Path, topics: Mapping[str, Any], tm: TopicMap) -> None:
    available = sorted(topics)
    for cam in tm.cameras:
        for topic, kinds in ((cam.image, (IMAGE, COMPRESSED)), (cam.camera_info, (CAMERA_INFO,))):
            if topic not in topics:
                what = "camera" if topic == cam.image else "the intrinsics (CameraInfo) of camera"
                raise BagError(f"{path}: topic {topic} ({what} {cam.name}) is not in the bag; topics: {available} "
                               "(name the bag's topics in a topic map: --topic-map)")
            if topics[topic].msgtype not in kinds:
                raise BagError(f"{path}: topic {topic} has type {topics[topic].msgtype}, expected one of {kinds}")
    if tm.lidar:
        if tm.lidar not in topics:
            raise BagError(f"{path}: LiDAR topic {tm.lidar} is not in the bag; topics: {available} "
                           "(name it in a topic map, or lidar: null)")
        if topics[tm.lidar].msgtype != POINTCLOUD2:
            raise BagError(f"{path}: topic {tm.lidar} has type {topics[tm.lidar].msgtype}, expected {POINTCLOUD2}")
    for t, kind in ((tm.tf, TF_MESSAGE), (tm.tf_static, TF_MESSAGE), (tm.odometry, ODOMETRY)):
        if t and t in topics and topics[t].msgtype != kind:
            raise BagError(f"{path}: topic {t} has type {topics[t].msgtype}, expected {kind}")


def _pick_ego_source(tf: TFBuffer, odom: TFBuffer, tm: TopicMap, stats: ReadStats) -> TFBuffer | None:
    if tm.world_frame in tf.frames and tm.base_frame in tf.frames and tf.can_transform(tm.world_frame, tm.base_frame):
        stats.ego_pose_source = "tf"
        return tf
    if tm.world_frame in odom.frames and odom.can_transform(tm.world_frame, tm.base_frame):
        stats.ego_pose_source = "odometry"
        return odom
    stats.ego_pose_source = "none"
    # What the bag does have above base_frame, to tell a wrong frame name from a missing pose.
    parents = sorted({e.parent for buf in (tf, odom) for child, e in buf._edges.items()
                      if child == tm.base_frame and e.static is None})
    seen = f"{tm.base_frame}'s parent there is {parents}" if parents else f"nothing moves {tm.base_frame} there"
    stats.warn(f"no ego pose {tm.world_frame} <- {tm.base_frame} in {tm.tf}"
               f"{' or ' + tm.odometry if tm.odometry else ''} ({seen}): frames carry no ego pose "
               f"(T_world_base unknown) and are processed without temporal fusion; if the bag has one under "
               f"other names, give them in a topic map (world_frame, base_frame, odometry)")
    return None


def _lookup_or_drop(path: Path, tf: TFBuffer, base_frame: str, frame_id: str, stamp_ns: int, stats: ReadStats,
                    topic: str, what: str) -> np.ndarray | None:
    """``T_base_frame`` (4, 4) at ``stamp_ns`` for a sensor message on ``topic``. A frame TF never
    mentions is a broken bag (:class:`BagError`, ``what`` says whose frame it is); a known frame with
    no transform at that time (gap, extrapolation) drops the set instead (counted, logged, None)."""
    try:
        return tf.lookup(base_frame, frame_id, stamp_ns)
    except TransformError as e:
        if frame_id not in tf.frames:
            raise BagError(f"{path}: no transform {base_frame} <- {frame_id!r} {what}: {e}; the extrinsics are "
                           f"missing: record /tf_static with the bag, name its topic in a topic map (tf_static), "
                           f"or give a rig YAML (mv4d infer --rig)") from e
        stats.dropped_tf += 1
        stats.warn(f"{topic} @ {stamp_ns}: {e}; set dropped")
        return None


def _build_frame(path: Path, ts, tm: TopicMap, msgs: tuple, rig: Rig | None, tf: TFBuffer, ego: TFBuffer | None,
                 infos: dict, stats: ReadStats) -> FrameRecord | None:
    n = len(tm.cameras)
    images, Ks, Ts, cam_stamps = [], [], [], []
    for i, cam in enumerate(tm.cameras):
        msgtype, raw = msgs[i]
        msg = _deserialize(ts, raw, msgtype, cam.image)
        stamp = stamp_to_ns(msg.header.stamp)
        try:
            rgb = image_to_rgb(msg) if msgtype == IMAGE else compressed_to_rgb(msg)
        except MessageError as e:
            raise BagError(f"{path}: {cam.image} @ {stamp}: {e}") from e
        info_list = infos[cam.camera_info]
        j = max(0, int(np.searchsorted([s for s, _, _ in info_list], stamp, side="right")) - 1)
        _, camera, info_frame = info_list[j]
        if rgb.shape[:2] != (camera.height, camera.width):
            stats.dropped_size_mismatch += 1
            stats.warn(f"{cam.image} @ {stamp}: image is {rgb.shape[1]}x{rgb.shape[0]} but {cam.camera_info} says "
                       f"{camera.width}x{camera.height}; set dropped")
            return None
        frame_id = str(msg.header.frame_id) or info_frame
        if rig is not None:
            T = rig.camera(cam.name).T_base_cam
        else:
            T = _lookup_or_drop(path, tf, tm.base_frame, frame_id, stamp, stats, cam.image,
                                f"(camera {cam.name}) in {tm.tf_static}/{tm.tf}")
            if T is None:
                return None
        images.append(rgb)
        Ks.append(camera.K)
        Ts.append(T)
        cam_stamps.append(stamp)
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
        raise BagError(f"{path}: cameras have different image sizes "
                       f"{ {c.name: im.shape[:2] for c, im in zip(tm.cameras, images)} }; FrameRecord needs one size")
    lidar_xyz = intensity = t_off = ring = lidar_T = None
    stamp_ns = cam_stamps[0]
    if tm.lidar:
        msgtype, raw = msgs[n]
        cloud = _deserialize(ts, raw, msgtype, tm.lidar)
        stamp_ns = stamp_to_ns(cloud.header.stamp)
        names = {f.name for f in cloud.fields}
        wanted = [f for f in ("intensity", "t", "ring") if f in names]
        try:
            xyz = read_xyz(cloud, wanted)
        except MessageError as e:
            raise BagError(f"{path}: {tm.lidar} @ {stamp_ns}: {e}") from e
        stats.nonfinite_points += xyz.num_nonfinite
        frame_id = str(cloud.header.frame_id) or tm.base_frame
        if frame_id == tm.base_frame:
            lidar_xyz = xyz.xyz
            lidar_T = None      # points already in base_link: the sensor origin is unknown
        else:
            lidar_T = rig.lidar.T_base_lidar if rig is not None and rig.lidar is not None else None
            if lidar_T is None:
                lidar_T = _lookup_or_drop(path, tf, tm.base_frame, frame_id, stamp_ns, stats, tm.lidar,
                                          f"for {tm.lidar}")
                if lidar_T is None:
                    return None
            lidar_xyz = (xyz.xyz if np.array_equal(lidar_T, np.eye(4))
                         else transform_points(lidar_T, xyz.xyz.astype(np.float64)).astype(np.float32))
        intensity = xyz.fields.get("intensity")
        t_off = xyz.fields.get("t")
        ring = xyz.fields.get("ring")
    # Unknown ego pose: NaN, never identity (the pipeline then fuses nothing into or out of the frame).
    T_world_base = np.full((4, 4), np.nan) if ego is None else np.eye(4)
    if ego is not None:
        try:
            T_world_base = ego.lookup(tm.world_frame, tm.base_frame, stamp_ns)
        except TransformError as e:
            stats.dropped_tf += 1
            stats.warn(f"ego pose at {stamp_ns}: {e}; set dropped")
            return None
    return FrameRecord(stamp_ns=stamp_ns, camera_names=tm.camera_names, images=np.stack(images),
                       intrinsics=np.stack(Ks), T_base_cam=np.stack(Ts), T_world_base=T_world_base,
                       lidar_xyz=lidar_xyz, lidar_intensity=intensity, lidar_time_offset_s=t_off,
                       camera_stamps_ns=np.asarray(cam_stamps, np.int64), source=f"rosbag:{path.name}",
                       lidar_ring=None if ring is None else np.rint(ring).astype(np.int16),
                       T_base_lidar=lidar_T if tm.lidar else None)
