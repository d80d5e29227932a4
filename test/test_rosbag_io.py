"""FrameRecord -> rosbag2 -> FrameRecord (sqlite3 and MCAP), topic maps, bad bags and `mv4d info`.

Frames are built here (small, random) so these tests do not depend on the synthetic world.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mv4d_core.cli import main as cli_main
from mv4d_core.data.frame import FrameRecord
from mv4d_core.data.info_command import bag_info
from mv4d_core.data.rosbag_io import BagError, ReadStats, read_frames, write_frames
from mv4d_core.data.topic_map import TopicMap, TopicMapError
from mv4d_core.geometry.camera import PinholeCamera
from mv4d_core.geometry.rig import CameraSpec, LidarSpec, Rig
from mv4d_core.geometry.transforms import invert_transform, transform_points, yaw_transform
from mv4d_core.msgs import MsgFactory, camera_to_camera_info, make_tf_message, read_xyz, rgb_to_image
from mv4d_core.msgs.tf import StampedTransform

F = MsgFactory.rosbags()
CAMS = ["CAM_FRONT", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]
H, W = 12, 16
K = np.array([[20.0, 0, 7.5], [0, 21.0, 5.5], [0, 0, 1]])
T0 = 1_700_000_000_000_000_000


def make_frames(n=4, cams=CAMS, seed=0, jitter_ms=0.0, lidar=True, period_ms=100, t_offsets=True):
    rng = np.random.default_rng(seed)
    T_base_cam = np.stack([yaw_transform(2 * np.pi * i / len(cams), (1.0, 0.2 * i, 1.6)) for i in range(len(cams))])
    Ks = np.stack([K * [[1 + 0.1 * i], [1 + 0.1 * i], [1]] for i in range(len(cams))])
    frames = []
    for k in range(n):
        stamp = T0 + k * period_ms * 1_000_000
        cam_stamps = None
        if jitter_ms:
            cam_stamps = stamp + (rng.uniform(-jitter_ms, jitter_ms, len(cams)) * 1e6).astype(np.int64)
        p = 50 + k
        frames.append(FrameRecord(
            stamp_ns=stamp, camera_names=list(cams), images=rng.integers(0, 256, (len(cams), H, W, 3), dtype=np.uint8),
            intrinsics=Ks, T_base_cam=T_base_cam, T_world_base=yaw_transform(0.05 * k, (2.0 * k, 0.1 * k, 0)),
            lidar_xyz=rng.normal(size=(p, 3)).astype(np.float32) * 10 if lidar else None,
            lidar_intensity=rng.random(p).astype(np.float32) if lidar else None,
            lidar_time_offset_s=(rng.random(p).astype(np.float32) * 0.05 if lidar and t_offsets else None),
            camera_stamps_ns=cam_stamps))
    return frames


def assert_same(a: FrameRecord, b: FrameRecord, exact_images=True, lidar_atol=0.0):
    assert b.stamp_ns == a.stamp_ns and b.camera_names == a.camera_names
    if exact_images:
        np.testing.assert_array_equal(b.images, a.images)
    np.testing.assert_array_equal(b.intrinsics, a.intrinsics)
    np.testing.assert_allclose(b.T_base_cam, a.T_base_cam, atol=1e-12)
    np.testing.assert_allclose(b.T_world_base, a.T_world_base, atol=1e-12)
    cam_stamps = a.camera_stamps_ns if a.camera_stamps_ns is not None else np.full(a.num_cameras, a.stamp_ns)
    np.testing.assert_array_equal(b.camera_stamps_ns, cam_stamps)
    if a.lidar_xyz is None:
        assert b.lidar_xyz is None
    else:
        if lidar_atol:
            np.testing.assert_allclose(b.lidar_xyz, a.lidar_xyz, atol=lidar_atol)
        else:
            np.testing.assert_array_equal(b.lidar_xyz, a.lidar_xyz)
        np.testing.assert_array_equal(b.lidar_intensity, a.lidar_intensity)
        if a.lidar_time_offset_s is None:
            assert b.lidar_time_offset_s is None
        else:
            np.testing.assert_array_equal(b.lidar_time_offset_s, a.lidar_time_offset_s)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("version", [8, 9])
def test_round_trip_is_exact(tmp_path, storage, version):
    frames = make_frames(jitter_ms=20)
    summary = write_frames(tmp_path / "bag", frames, storage=storage, version=version)
    assert summary.num_frames == 4 and summary.message_counts["/CAM_FRONT/image_raw"] == 4
    assert summary.topics["/tf_static"] == "tf2_msgs/msg/TFMessage" and summary.message_counts["/tf_static"] == 1
    stats = ReadStats()
    out = list(read_frames(tmp_path / "bag", stats=stats))
    assert len(out) == 4 and stats.frames == 4 and stats.dropped_messages == 0
    assert stats.ego_pose_source == "tf"
    for a, b in zip(frames, out):
        assert_same(a, b)
    meta = (tmp_path / "bag" / "metadata.yaml").read_text()
    assert f"version: {version}" in meta


def test_tf_static_is_offered_transient_local(tmp_path):
    from rosbags.interfaces import QosDurability
    from rosbags.rosbag2 import Reader

    write_frames(tmp_path / "bag", make_frames(2), storage="mcap")
    with Reader(tmp_path / "bag") as r:
        qos = {c.topic: c.ext.offered_qos_profiles for c in r.connections}
        static = [m for c in r.connections if c.topic == "/tf_static" for m in r.messages([c])]
    assert qos["/tf_static"][0].durability == QosDurability.TRANSIENT_LOCAL and qos["/tf_static"][0].depth == 1
    assert qos["/CAM_FRONT/image_raw"][0].durability == QosDurability.VOLATILE
    msg = F.typestore.deserialize_cdr(static[0][2], "tf2_msgs/msg/TFMessage")
    assert {(t.header.frame_id, t.child_frame_id) for t in msg.transforms} == \
        {("base_link", c) for c in CAMS} | {("base_link", "LIDAR_TOP")}


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_images(tmp_path, fmt):
    frames = make_frames(2, lidar=False)
    for f in frames:  # smooth images so JPEG stays close
        yy, xx = np.mgrid[0:H, 0:W]
        f.images[:] = np.stack([xx * 12, yy * 15, 255 - xx * 8], -1).astype(np.uint8)
    s = write_frames(tmp_path / "bag", frames, image_format=fmt)
    assert s.topics["/CAM_FRONT/image_raw/compressed"] == "sensor_msgs/msg/CompressedImage"
    out = list(read_frames(tmp_path / "bag"))
    assert len(out) == 2
    for a, b in zip(frames, out):
        assert_same(a, b, exact_images=(fmt == "png"))
        assert np.abs(a.images.astype(int) - b.images).mean() < 4


def test_lidar_written_in_lidar_frame_and_moved_back(tmp_path):
    frames = make_frames(2)
    T_base_lidar = yaw_transform(0.7, (0.9, 0.0, 1.8))
    write_frames(tmp_path / "bag", frames, extra={"T_base_lidar": T_base_lidar}, storage="mcap")
    from rosbags.rosbag2 import Reader
    with Reader(tmp_path / "bag") as r:
        conn = next(c for c in r.connections if c.topic == "/lidar/points")
        raw = next(iter(r.messages([conn])))[2]
    cloud = F.typestore.deserialize_cdr(raw, "sensor_msgs/msg/PointCloud2")
    assert cloud.header.frame_id == "LIDAR_TOP" and [f.name for f in cloud.fields] == ["x", "y", "z", "intensity", "t"]
    expected_lidar = transform_points(invert_transform(T_base_lidar), frames[0].lidar_xyz.astype(np.float64))
    np.testing.assert_allclose(read_xyz(cloud).xyz, expected_lidar, atol=1e-5)
    for a, b in zip(frames, read_frames(tmp_path / "bag")):
        assert_same(a, b, lidar_atol=1e-5)


def test_custom_topic_map_yaml_and_odometry_ego_source(tmp_path):
    tm = TopicMap.default(CAMS, odometry="/odom", world_frame="odom")
    tm.save_yaml(tmp_path / "tm.yaml")
    tm2 = TopicMap.from_yaml(tmp_path / "tm.yaml")
    assert tm2 == tm
    frames = make_frames(3)
    s = write_frames(tmp_path / "bag", frames, topic_map=tm2)
    assert s.topics["/odom"] == "nav_msgs/msg/Odometry"
    stats = ReadStats()
    out = list(read_frames(tmp_path / "bag", tm2.with_(tf="/no_such_tf"), stats=stats))
    assert stats.ego_pose_source == "odometry"
    for a, b in zip(frames, out):
        assert_same(a, b)


def test_topic_map_validation():
    with pytest.raises(TopicMapError, match="cameras\\[0\\].image"):
        TopicMap.from_dict({"cameras": [{"name": "A", "image": "relative/topic"}]})
    with pytest.raises(TopicMapError, match="unknown keys"):
        TopicMap.from_dict({"cameras": ["A"], "lidr": "/x"})
    with pytest.raises(TopicMapError, match="duplicate"):
        TopicMap.default(["A", "A"])
    tm = TopicMap.from_dict(yaml.safe_load("cameras: [A, B]\nlidar: null\n"))
    assert tm.cameras[1].image == "/B/image_raw" and tm.lidar is None


def test_rig_overrides_tf_static(tmp_path):
    frames = make_frames(2)
    write_frames(tmp_path / "bag", frames)
    rig = Rig(tuple(CameraSpec(n, PinholeCamera(K, W, H), yaw_transform(0.1 * i)) for i, n in enumerate(CAMS)),
              LidarSpec("LIDAR_TOP", np.eye(4)))
    out = list(read_frames(tmp_path / "bag", rig=rig))
    np.testing.assert_allclose(out[0].T_base_cam, rig.extrinsics())


def test_jitter_beyond_slop_drops_the_set_and_counts_it(tmp_path):
    frames = make_frames(5)
    frames[2].camera_stamps_ns = np.array([frames[2].stamp_ns, frames[2].stamp_ns + 90_000_000, frames[2].stamp_ns])
    write_frames(tmp_path / "bag", frames)
    stats = ReadStats()
    out = list(read_frames(tmp_path / "bag", slop_s=0.05, stats=stats))
    assert [f.stamp_ns for f in out] == [f.stamp_ns for i, f in enumerate(frames) if i != 2]
    assert stats.sets_emitted == 4 and stats.partial_arrivals > 0
    assert sum(stats.unmatched_at_end.values()) + sum(stats.evicted.values()) == 4  # 3 images + LiDAR of set 2
    assert stats.dropped_messages == 4 and stats.dropped_sets == 1
    sync = bag_info(tmp_path / "bag", slop_s=0.05)["sync"]  # `mv4d info` sees the same
    assert sync["synced_sets"] == 4 and sync["dropped_sets"] == 1
    assert sorted(sync["spread_ms"].values()) == [0.0, 0.0, 0.0]


def test_nonfinite_points_are_removed_and_counted(tmp_path):
    frames = make_frames(2, t_offsets=False)
    frames[1].lidar_xyz[[0, 5, 7]] = [np.nan, np.inf, -np.inf]
    write_frames(tmp_path / "bag", frames)
    stats = ReadStats()
    out = list(read_frames(tmp_path / "bag", stats=stats))
    assert stats.nonfinite_points == 3
    keep = np.isfinite(frames[1].lidar_xyz).all(1)
    np.testing.assert_array_equal(out[1].lidar_xyz, frames[1].lidar_xyz[keep])
    np.testing.assert_array_equal(out[1].lidar_intensity, frames[1].lidar_intensity[keep])


def test_writer_rejects_bad_requests(tmp_path):
    frames = make_frames(2)
    write_frames(tmp_path / "bag", frames)
    with pytest.raises(BagError, match="already exists"):
        write_frames(tmp_path / "bag", frames)
    with pytest.raises(BagError, match="storage"):
        write_frames(tmp_path / "b2", frames, storage="db3")
    with pytest.raises(BagError, match="version"):
        write_frames(tmp_path / "b3", frames, version=5)
    moved = make_frames(2)
    moved[1].T_base_cam = moved[1].T_base_cam.copy()
    moved[1].T_base_cam[2, 0, 3] += 0.1
    with pytest.raises(BagError, match="CAM_BACK_RIGHT.*tf_static"):
        write_frames(tmp_path / "b4", moved)


# --------------------------------------------------------------------------- hand-made bad bags
def write_raw_bag(path: Path, entries, storage="sqlite3"):
    """entries: (topic, msgtype, log_time_ns, msg) written in the given order."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as w:
        conns = {}
        for topic, msgtype, t, msg in entries:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=F.typestore)
            w.write(conns[topic], t, F.typestore.serialize_cdr(msg, msgtype))


def one_camera_entries(n=3, encoding="rgb8", info_size=(W, H), stamps=None, tf_static=True, tf_stamps=None):
    cam = PinholeCamera(K, *info_size)
    stamps = stamps if stamps is not None else [T0 + k * 100_000_000 for k in range(n)]
    entries = []
    if tf_static:
        entries.append(("/tf_static", "tf2_msgs/msg/TFMessage", stamps[0],
                        make_tf_message([StampedTransform("base_link", "CAM_FRONT", stamps[0], np.eye(4))], factory=F)))
    for k, s in enumerate(stamps):
        img = rgb_to_image(np.full((H, W, 3), k, np.uint8), s, "CAM_FRONT", factory=F)
        img.encoding = encoding
        entries.append(("/CAM_FRONT/image_raw", "sensor_msgs/msg/Image", T0 + k, img))
        entries.append(("/CAM_FRONT/camera_info", "sensor_msgs/msg/CameraInfo", T0 + k,
                        camera_to_camera_info(cam, s, "CAM_FRONT", factory=F)))
    for s in (tf_stamps if tf_stamps is not None else stamps):
        entries.append(("/tf", "tf2_msgs/msg/TFMessage", s,
                        make_tf_message([StampedTransform("map", "base_link", s, np.eye(4))], factory=F)))
    return entries


def test_missing_topics_are_named(tmp_path):
    write_frames(tmp_path / "bag", make_frames(2, lidar=False))
    with pytest.raises(BagError, match="/CAM_SIDE/image_raw .*not in the bag"):
        read_frames(tmp_path / "bag", TopicMap.default(["CAM_SIDE"], lidar=False))
    with pytest.raises(BagError, match="LiDAR topic /lidar/points"):
        read_frames(tmp_path / "bag", TopicMap.default(CAMS, lidar=True))
    with pytest.raises(BagError, match="does not exist"):
        read_frames(tmp_path / "nope")


def test_missing_tf_static_names_the_frame(tmp_path):
    write_raw_bag(tmp_path / "bag", one_camera_entries(tf_static=False))
    with pytest.raises(BagError, match="base_link <- 'CAM_FRONT'"):
        list(read_frames(tmp_path / "bag", TopicMap.default(["CAM_FRONT"], lidar=False)))


def test_unknown_encoding_names_topic_and_encoding(tmp_path):
    write_raw_bag(tmp_path / "bag", one_camera_entries(encoding="yuv422"))
    with pytest.raises(BagError, match="/CAM_FRONT/image_raw.*yuv422"):
        list(read_frames(tmp_path / "bag", TopicMap.default(["CAM_FRONT"], lidar=False)))


def test_image_size_mismatch_with_camera_info_drops_and_counts(tmp_path):
    write_raw_bag(tmp_path / "bag", one_camera_entries(info_size=(640, 480)))
    stats = ReadStats()
    assert list(read_frames(tmp_path / "bag", TopicMap.default(["CAM_FRONT"], lidar=False), stats=stats)) == []
    assert stats.dropped_size_mismatch == 3 and "640x480" in stats.warnings[0]


def test_missing_ego_pose_at_a_stamp_drops_and_counts(tmp_path):
    stamps = [T0 + k * 100_000_000 for k in range(4)]
    write_raw_bag(tmp_path / "bag", one_camera_entries(stamps=stamps, tf_stamps=stamps[:2]))
    stats = ReadStats()
    out = list(read_frames(tmp_path / "bag", TopicMap.default(["CAM_FRONT"], lidar=False), stats=stats))
    assert [f.stamp_ns for f in out] == stamps[:2] and stats.dropped_tf == 2


def test_duplicate_and_out_of_order_stamps_are_counted(tmp_path):
    s = [T0, T0 + 100_000_000, T0 + 100_000_000, T0 + 50_000_000, T0 + 200_000_000]
    write_raw_bag(tmp_path / "bag", one_camera_entries(stamps=s))
    stats = ReadStats()
    out = list(read_frames(tmp_path / "bag", TopicMap.default(["CAM_FRONT"], lidar=False), stats=stats))
    # one input: every arrival emits at once, so the duplicate stamp is emitted again (never merged silently)
    assert stats.out_of_order["/CAM_FRONT/image_raw"] == 1
    assert [f.stamp_ns for f in out] == s
    assert [int(f.images[0, 0, 0, 0]) for f in out] == [0, 1, 2, 3, 4]


def test_duplicate_stamp_while_waiting_is_counted(tmp_path):
    frames = make_frames(3, lidar=False)
    write_frames(tmp_path / "bag", frames)
    from rosbags.rosbag2 import Reader
    entries = []
    with Reader(tmp_path / "bag") as r:
        for c, t, raw in r.messages():
            entries.append((c.topic, c.msgtype, t, F.typestore.deserialize_cdr(raw, c.msgtype)))
    first_front = next(i for i, e in enumerate(entries) if e[0] == "/CAM_FRONT/image_raw")
    entries.insert(first_front, entries[first_front])  # same stamp twice before the other cameras arrive
    write_raw_bag(tmp_path / "dup", entries)
    stats = ReadStats()
    assert len(list(read_frames(tmp_path / "dup", stats=stats))) == 3
    assert stats.duplicate_stamps["/CAM_FRONT/image_raw"] == 1 and stats.dropped_messages == 1


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_truncated_bag_is_a_clear_error(tmp_path, storage):
    write_frames(tmp_path / "bag", make_frames(4), storage=storage)
    data_file = next(p for p in (tmp_path / "bag").iterdir() if p.suffix in (".db3", ".mcap"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    with pytest.raises(BagError, match="cannot open bag|corrupt or truncated"):
        list(read_frames(tmp_path / "bag"))


def test_garbage_metadata_is_a_clear_error(tmp_path):
    write_frames(tmp_path / "bag", make_frames(1))
    (tmp_path / "bag" / "metadata.yaml").write_text("rosbag2_bagfile_information: [\n")
    with pytest.raises(BagError, match="cannot open bag"):
        read_frames(tmp_path / "bag")


# --------------------------------------------------------------------------- mv4d info
def test_info_reports_topics_rates_and_sync(tmp_path, capsys):
    frames = make_frames(6, jitter_ms=15, period_ms=100)
    write_frames(tmp_path / "bag", frames, storage="mcap")
    rep = bag_info(tmp_path / "bag", slop_s=0.08)
    rows = {r["topic"]: r for r in rep["topics"]}
    assert rows["/CAM_FRONT/image_raw"]["count"] == 6 and rows["/tf_static"]["count"] == 1
    assert rows["/lidar/points"]["rate_hz"] == pytest.approx(10.0)
    sync = rep["sync"]
    assert sync["synced_sets"] == 6 and sync["dropped_sets"] == 0 and set(sync["unsynced"].values()) == {0}
    spreads = [int(max(f.camera_stamps_ns.max(), f.stamp_ns) - min(f.camera_stamps_ns.min(), f.stamp_ns)) / 1e6
               for f in frames]
    assert sync["spread_ms"]["max"] == pytest.approx(max(spreads))
    assert sync["spread_ms"]["median"] == pytest.approx(float(np.median(spreads)))
    assert cli_main(["info", str(tmp_path / "bag")]) == 0
    text = capsys.readouterr().out
    assert "/CAM_BACK_LEFT/image_raw" in text and "6 synced sets" in text
    assert cli_main(["info", str(tmp_path / "bag"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sync"]["synced_sets"] == 6
    assert cli_main(["info", str(tmp_path / "missing")]) == 2          # a user error: one line, exit 2
