"""``mv4d infer``: a synthetic bag in, a bag with the same sensor messages plus the outputs out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mv4d_core.cli import main as mv4d
from mv4d_core.data.rosbag_io import write_frames
from mv4d_core.data.synth import generate_sequence
from mv4d_core.models import ModelConfig, build_model
from mv4d_core.training.checkpoint import save_atomic


@pytest.fixture(scope="module")
def synthetic_bag(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    frames = generate_sequence(3, seed=5)
    write_frames(root / "in_bag", frames)
    cfg = ModelConfig.tiny()
    torch.manual_seed(0)
    ckpt = root / "tiny_untrained.pt"
    save_atomic({"model_config": cfg.to_dict(), "model": build_model(cfg).state_dict()}, ckpt)
    return root, frames, ckpt


def _read(path):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    out = {}
    with Reader(path) as r:
        types = {c.topic: c.msgtype for c in r.connections}
        for c, t_ns, raw in r.messages():
            out.setdefault(c.topic, []).append((t_ns, ts.deserialize_cdr(raw, c.msgtype)))
    return types, out


def test_infer_writes_sensor_topics_and_stamped_outputs(synthetic_bag, capsys):
    root, frames, ckpt = synthetic_bag
    rc = mv4d(["infer", "--checkpoint", str(ckpt), "--in", str(root / "in_bag"), "--out", str(root / "out_bag")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "3 frames processed, 0 skipped" in printed and "dropped messages 0" in printed
    in_types, in_msgs = _read(root / "in_bag")
    types, msgs = _read(root / "out_bag")
    # Every input message is copied unchanged (same topics, counts and log times).
    for topic in in_types:
        assert types[topic] == in_types[topic]
        assert [t for t, _ in msgs[topic]] == [t for t, _ in in_msgs[topic]]
    assert "/tf_static" in msgs
    stamps = [f.stamp_ns for f in frames]
    p = "/mv4d_perception/output/"
    assert types[p + "occupancy"] == "sensor_msgs/msg/PointCloud2"
    assert types[p + "occupancy_bev"] == "nav_msgs/msg/OccupancyGrid"
    assert types[p + "depth/CAM_FRONT"] == "sensor_msgs/msg/Image"
    assert types[p + "moving"] == "sensor_msgs/msg/PointCloud2"
    for name in ("occupancy", "points", "flow", "moving", "occupancy_bev", "depth/CAM_BACK",
                 "depth/CAM_BACK/camera_info"):
        got = msgs[p + name]
        assert len(got) == 3, name
        # Log time and header stamp are the input stamps.
        header_ns = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in got]
        assert [t for t, _ in got] == header_ns
        if not name.startswith("depth"):
            assert header_ns == stamps and all(m.header.frame_id == "base_link" for _, m in got)
    depth = msgs[p + "depth/CAM_BACK"][0][1]
    assert depth.encoding == "32FC1" and depth.header.frame_id == "CAM_BACK"
    occ = msgs[p + "occupancy"][0][1]
    assert [f.name for f in occ.fields] == ["x", "y", "z", "prob"] and occ.width > 0
    grid = msgs[p + "occupancy_bev"][0][1]
    assert (grid.info.width, grid.info.height) == (100, 100) and np.asarray(grid.data).max() <= 100


def test_infer_refuses_to_overwrite_and_reports_bad_checkpoints(synthetic_bag, capsys):
    root, _, ckpt = synthetic_bag
    (root / "exists").mkdir()
    assert mv4d(["infer", "--checkpoint", str(ckpt), "--in", str(root / "in_bag"), "--out", str(root / "exists")]) == 2
    assert mv4d(["infer", "--checkpoint", str(root / "missing.pt"), "--in", str(root / "in_bag"),
                 "--out", str(root / "out2")]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint: file" in err and "missing.pt does not exist" in err


def test_infer_takes_any_topic_names_and_world_frame_from_a_topic_map(synthetic_bag, tmp_path, capsys):
    from mv4d_core.data.topic_map import CameraTopics, TopicMap

    root, frames, ckpt = synthetic_bag
    cams = tuple(CameraTopics(c, f"/sensing/{c.lower()}/image", f"/sensing/{c.lower()}/info", f"{c.lower()}_optical")
                 for c in frames[0].camera_names)
    tm = TopicMap(cams, lidar="/sensing/velodyne_points", lidar_frame="velodyne", world_frame="odom")
    write_frames(tmp_path / "renamed", frames, topic_map=tm)
    tm.save_yaml(tmp_path / "topics.yaml")
    # Without the map the bag's layout is unknown: one line, exit 2, naming the fix.
    assert mv4d(["infer", "--checkpoint", str(ckpt), "--in", str(tmp_path / "renamed"),
                 "--out", str(tmp_path / "o1")]) == 2
    assert "--topic-map" in capsys.readouterr().err
    rc = mv4d(["infer", "--checkpoint", str(ckpt), "--in", str(tmp_path / "renamed"), "--out", str(tmp_path / "o2"),
               "--topic-map", str(tmp_path / "topics.yaml")])
    out = capsys.readouterr()
    assert rc == 0 and "3 frames processed" in out.out and "temporal fusion on (ego pose from tf)" in out.out
    assert "no ego pose" not in out.err
    types, msgs = _read(tmp_path / "o2")
    depth = msgs["/mv4d_perception/output/depth/CAM_FRONT"][0][1]
    assert depth.header.frame_id == "cam_front_optical"            # the map's optical frame names
    # --world-frame overrides the map's: a frame the bag does not have means no ego pose, said once.
    rc = mv4d(["infer", "--checkpoint", str(ckpt), "--in", str(tmp_path / "renamed"), "--out", str(tmp_path / "o3"),
               "--topic-map", str(tmp_path / "topics.yaml"), "--world-frame", "map"])
    out = capsys.readouterr()
    assert rc == 0 and "temporal fusion off (no ego pose in the bag)" in out.out
    assert sum("no ego pose map <- base_link" in ln for ln in out.err.splitlines()) == 1
