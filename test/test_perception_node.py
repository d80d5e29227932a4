"""The ROS 2 perception node over real DDS (loopback namespace), plus its pure-Python helpers.

The node runs in-process inside the namespaced subprocess with an executor; a synthetic rig's
messages (``mv4d_core.data.synth``) are published to it over DDS. The model is the real network
from the tiny config with random initial weights (untrained): the tests check message types,
frames, field layouts, stamps and geometry that hold for any weights (the untrained SDF head
starts as the ground plane z = 0), not occupancy quality.
"""

from __future__ import annotations

import json

import pytest

from netns import run_namespaced_json
from mv4d_ros.input_health import InputHealth


def test_input_health_counts_every_occurrence_and_logs_each_cause_throttled():
    now = [100.0]
    logged = []
    h = InputHealth(logged.append, throttle_s=5.0, clock=lambda: now[0])
    assert h.report("bad_encoding", "CAM_FRONT: 32FC1") is True      # first one logs at once
    assert h.report("bad_encoding", "CAM_FRONT: 32FC1") is False
    assert h.report("image_size_mismatch", "CAM_BACK: 88x48") is True  # other cause: own throttle
    now[0] += 5.0
    assert h.report("bad_encoding", "CAM_FRONT: 32FC1", n=3) is True
    assert h.counts == {"bad_encoding": 5, "image_size_mismatch": 1}
    assert len(logged) == 3
    assert "[bad_encoding] CAM_FRONT: 32FC1" in logged[0]
    assert "(4 since last report, 5 total)" in logged[2]


NODE_SCRIPT = r"""
import json, os, sys, tempfile, time
import numpy as np
import torch
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Float64
from visualization_msgs.msg import Marker, MarkerArray

from mv4d_core.data.synth import generate_sequence, synthetic_rig
from mv4d_core.geometry.transforms import invert_transform, transform_points
from mv4d_core.models import ModelConfig, build_model
from mv4d_core.msgs import (MsgFactory, array_to_image, header_stamp_ns, pointcloud2_to_array, rgb_to_image,
                            xyz_to_pointcloud2, image_to_depth_m)
from mv4d_core.training.checkpoint import save_atomic
from mv4d_ros.perception_node import PerceptionNode

tmp = tempfile.mkdtemp()
cfg = ModelConfig.tiny()
torch.manual_seed(0)
ckpt = os.path.join(tmp, "tiny_untrained.pt")
save_atomic({"model_config": cfg.to_dict(), "model": build_model(cfg).state_dict()}, ckpt)
rig = synthetic_rig("tiny")
rig_file = os.path.join(tmp, "rig.yaml")
rig.save_yaml(rig_file)
frames = generate_sequence(3, seed=3)
CAMS = list(rig.camera_names)
T_lidar_base = invert_transform(rig.lidar.T_base_lidar)

rclpy.init()
node = PerceptionNode(parameter_overrides=[
    Parameter("rig_file", value=rig_file), Parameter("checkpoint", value=ckpt),
    Parameter("use_lidar", value=True), Parameter("publish.markers", value=True),
    Parameter("max_markers", value=500), Parameter("diagnostics_period_s", value=0.2),
    Parameter("log_throttle_s", value=0.5)])
io = rclpy.create_node("test_io")
f = MsgFactory.rclpy()
reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
img_pubs = {c: io.create_publisher(Image, f"/mv4d_perception/input/{c}/image", 10) for c in CAMS}
lidar_pub = io.create_publisher(PointCloud2, "/mv4d_perception/input/lidar", 10)
got = {k: [] for k in ("occupancy", "points", "flow", "moving", "bev", "markers", "depth", "depth_info", "proc", "lat",
                       "diag")}
subs = [
    io.create_subscription(PointCloud2, "/mv4d_perception/output/occupancy", got["occupancy"].append, reliable),
    io.create_subscription(PointCloud2, "/mv4d_perception/output/points", got["points"].append, reliable),
    io.create_subscription(PointCloud2, "/mv4d_perception/output/flow", got["flow"].append, reliable),
    io.create_subscription(PointCloud2, "/mv4d_perception/output/moving", got["moving"].append, reliable),
    io.create_subscription(OccupancyGrid, "/mv4d_perception/output/occupancy_bev", got["bev"].append, reliable),
    io.create_subscription(MarkerArray, "/mv4d_perception/output/occupancy_markers", got["markers"].append, reliable),
    io.create_subscription(Image, "/mv4d_perception/output/depth/CAM_FRONT", got["depth"].append, reliable),
    io.create_subscription(CameraInfo, "/mv4d_perception/output/depth/CAM_FRONT/camera_info", got["depth_info"].append, reliable),
    io.create_subscription(Float64, "/mv4d_perception/debug/processing_time_ms", got["proc"].append, reliable),
    io.create_subscription(Float64, "/mv4d_perception/debug/pipeline_latency_ms", got["lat"].append, reliable),
    io.create_subscription(DiagnosticArray, "/diagnostics", got["diag"].append, 10),
]
ex = rclpy.executors.SingleThreadedExecutor()
ex.add_node(node); ex.add_node(io)

def spin_until(cond, timeout):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        ex.spin_once(timeout_sec=0.02)
    return cond()

# Discovery both ways before publishing anything.
assert spin_until(lambda: all(p.get_subscription_count() > 0 for p in [*img_pubs.values(), lidar_pub])
                  and all(p.get_subscription_count() > 0 for p in [*node.pubs.values(), node.pub_processing_ms,
                                                                   node.pub_latency_ms, *node.depth_pubs["CAM_FRONT"]]),
                  20), "discovery failed"

def publish_set(frame, stamp, images=None, skip=(), lidar_xyz=None):
    # The cloud first, received before the images: it then joins the set whatever the load.
    xyz = frame.lidar_xyz if lidar_xyz is None else lidar_xyz
    lidar_pub.publish(xyz_to_pointcloud2(transform_points(T_lidar_base, xyz.astype(np.float64)).astype(np.float32),
                                         stamp, "LIDAR_TOP", factory=f))
    assert spin_until(lambda: node.lidar_buffer.newest_ns == stamp, 10), "cloud not received"
    for i, c in enumerate(CAMS):
        if c in skip:
            continue
        msg = images[c] if images and c in images else rgb_to_image(frame.images[i], stamp, c, factory=f)
        img_pubs[c].publish(msg)

def occ_stamps():
    return [header_stamp_ns(m) for m in got["occupancy"]]

res = {"good": []}
# 1) three good frames
for fr in frames:
    publish_set(fr, fr.stamp_ns)
    assert spin_until(lambda: fr.stamp_ns in occ_stamps() and any(header_stamp_ns(m) == fr.stamp_ns for m in got["depth"]), 60), \
        f"no output for frame {fr.stamp_ns}: {node.counters()}"
spin_until(lambda: len(got["markers"]) >= 3 and len(got["bev"]) >= 3 and len(got["proc"]) >= 3 and len(got["lat"]) >= 3, 10)

occ = got["occupancy"][-1]
arr = pointcloud2_to_array(occ)
res["occupancy"] = {"frame": occ.header.frame_id, "fields": [(fl.name, fl.offset, fl.datatype) for fl in occ.fields],
                    "height": occ.height, "n": int(arr.shape[0]), "stamps": occ_stamps(),
                    "z_max": float(arr["z"].max()), "z_min": float(arr["z"].min()),
                    "prob_min": float(arr["prob"].min())}
pts = got["points"][-1]
parr = pointcloud2_to_array(pts)
res["points"] = {"frame": pts.header.frame_id, "fields": [fl.name for fl in pts.fields], "n": int(parr.shape[0]),
                 "stamp": header_stamp_ns(pts), "finite": bool(np.isfinite(parr["x"]).all())}
fl = got["flow"][-1]
res["flow"] = {"fields": [(x.name, x.datatype) for x in fl.fields], "n": fl.width, "frame": fl.header.frame_id}
mv = got["moving"][-1]
marr = pointcloud2_to_array(mv)
res["moving"] = {"fields": [(x.name, x.offset, x.datatype) for x in mv.fields], "n": mv.width,
                 "frame": mv.header.frame_id, "stamps": [header_stamp_ns(m) for m in got["moving"]],
                 "min_speed": float(np.sqrt(marr["vx"] ** 2 + marr["vy"] ** 2 + marr["vz"] ** 2).min()) if len(marr) else None,
                 "probs": sorted(set(marr["moving_prob"].tolist()))}
bev = got["bev"][-1]
bd = np.array(bev.data, np.int8)
res["bev"] = {"frame": bev.header.frame_id, "w": bev.info.width, "h": bev.info.height, "res": bev.info.resolution,
              "origin": [bev.info.origin.position.x, bev.info.origin.position.y], "len": len(bev.data),
              "min": int(bd.min()), "max": int(bd.max()), "stamp": header_stamp_ns(bev)}
mk = got["markers"][-1].markers
cubes = [m for m in mk[1:] if m.ns == "occupancy"]
arrows = [m for m in mk[1:] if m.ns == "velocity"]
res["markers"] = {"first_action": mk[0].action, "types": sorted({m.type for m in cubes}),
                  "cubes": sum(len(m.points) for m in cubes), "frame": mk[1].header.frame_id if len(mk) > 1 else "",
                  "arrow_types": sorted({m.type for m in arrows}), "arrows": len(arrows),
                  "arrow_points": sorted({len(m.points) for m in arrows}),
                  "moving_in_that_set": next((m.width for m in got["moving"]
                                              if header_stamp_ns(m) == header_stamp_ns(mk[0])), None)}
dm = got["depth"][-1]
d = image_to_depth_m(dm)
# The same frames through a fresh offline pipeline (the code path of `mv4d infer`): without odometry
# the node fuses nothing, so its last CAM_FRONT depth must be the offline depth of the last frame.
from mv4d_core.engines import create_engine
from mv4d_core.pipeline.pipeline import PerceptionPipeline, output_arrays
offline = PerceptionPipeline(create_engine("torch", ckpt, "cpu"), node.config)
def offline_depth(frame):
    out = offline.process(frame, pose_known=False)
    return output_arrays(out, node.config, {"depth"}).depth["CAM_FRONT"]
def max_rel(a, b):
    both = np.isfinite(a) & np.isfinite(b)
    return float((np.abs(a - b)[both] / np.abs(b[both])).max())
want, other = offline_depth(frames[-1]), offline_depth(frames[0])
res["depth"] = {"encoding": dm.encoding, "frame": dm.header.frame_id, "size": [dm.width, dm.height], "step": dm.step,
                "stamp": header_stamp_ns(dm), "finite_frac": float(np.isfinite(d).mean()),
                "same_invalid_pixels": bool(np.array_equal(np.isfinite(d), np.isfinite(want))),
                "offline_max_rel": max_rel(d, want), "other_frame_max_rel": max_rel(d, other)}
di = got["depth_info"][-1]
res["depth_info"] = {"size": [di.width, di.height], "frame": di.header.frame_id}
res["debug"] = {"proc": [m.data for m in got["proc"]], "lat_n": len(got["lat"])}
res["frame_stamps"] = [fr.stamp_ns for fr in frames]
n_ok = len(got["occupancy"])

# 2) broken inputs; the node must keep running and count each cause. One set at a time: the node
# processes the newest complete set, so sets published back to back could supersede each other.
base = frames[-1].stamp_ns
fr = frames[-1]
def counted(key, n):
    return spin_until(lambda: node.counters().get(key, 0) >= n, 30)
bad_enc = array_to_image(np.zeros((96, 176), np.float32), "32FC1", base + 1_000_000_000, "CAM_FRONT", factory=f)
publish_set(fr, base + 1_000_000_000, images={"CAM_FRONT": bad_enc})
assert counted("drop_bad_encoding", 1), node.counters()
small = rgb_to_image(np.zeros((48, 88, 3), np.uint8), base + 1_100_000_000, "CAM_BACK", factory=f)
publish_set(fr, base + 1_100_000_000, images={"CAM_BACK": small})
assert counted("drop_image_size_mismatch", 1), node.counters()
publish_set(fr, base + 1_200_000_000, skip=("CAM_BACK_RIGHT",))
nan_xyz = fr.lidar_xyz.copy(); nan_xyz[::2] = np.nan
publish_set(fr, base + 1_300_000_000, lidar_xyz=nan_xyz)
assert spin_until(lambda: base + 1_300_000_000 in occ_stamps(), 60), f"no output after NaN cloud: {node.counters()}"
# 3) the bag loops: stamps jump back to the first frame; sync restarts and output follows.
publish_set(frames[0], frames[0].stamp_ns)
assert spin_until(lambda: occ_stamps().count(frames[0].stamp_ns) == 2, 60), f"no output after clock jump: {node.counters()}"
spin_until(lambda: False, 0.6)  # let a couple of diagnostics go out
diag = [s for a in got["diag"] for s in a.status if s.name == "mv4d_perception: perception"]
res["diag"] = {"n": len(diag), "last": {kv.key: kv.value for kv in diag[-1].values}, "level": int.from_bytes(diag[-1].level, "little") if isinstance(diag[-1].level, bytes) else int(diag[-1].level),
               "message": diag[-1].message}
res["counters"] = node.counters()
res["occ_after_bad"] = occ_stamps()[n_ok:]
print(json.dumps(res))
ex.shutdown(); node.destroy_node(); io.destroy_node(); rclpy.shutdown()
"""


@pytest.fixture(scope="module")
def node_run():
    return run_namespaced_json(NODE_SCRIPT, "test_perception_node", timeout=240)


@pytest.mark.ros
class TestPerceptionNodeOverDDS:
    def test_occupancy_cloud_layout_frame_and_stamps(self, node_run):
        occ = node_run["occupancy"]
        assert occ["frame"] == "base_link" and occ["height"] == 1
        # x, y, z, prob FLOAT32 (7) at fixed offsets.
        assert [tuple(x) for x in occ["fields"]] == [("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("prob", 12, 7)]
        # One output per input set, stamped with the set's stamp (the synthetic frames' stamps).
        assert occ["stamps"][:3] == node_run["frame_stamps"]
        # Untrained model = ground-plane SDF prior: occupied voxels are the road layer (centre 0.2 m, the
        # road passes through it) and the layer beneath it (centre -0.6 m) of the TINY grid.
        assert occ["n"] > 0 and occ["z_min"] == pytest.approx(-0.6) and occ["z_max"] == pytest.approx(0.2)
        assert occ["prob_min"] >= 0.5

    def test_points_flow_bev_and_markers(self, node_run):
        pts = node_run["points"]
        assert pts["frame"] == "base_link" and pts["fields"] == ["x", "y", "z", "rgb"] and pts["n"] > 0 and pts["finite"]
        assert pts["stamp"] == node_run["frame_stamps"][-1]
        flow = node_run["flow"]
        assert [tuple(x) for x in flow["fields"]] == [(n, 7) for n in ("x", "y", "z", "vx", "vy", "vz")]
        assert flow["frame"] == "base_link" and flow["n"] == node_run["occupancy"]["n"]
        # The moving-object cloud comes with every set. The untrained model has no motion gate, so a
        # voxel moves when its (random) speed reaches flow.moving_min_speed_mps (0.5 m/s).
        moving = node_run["moving"]
        assert [tuple(x) for x in moving["fields"]] == [(n, 4 * i, 7) for i, n in
                                                        enumerate(("x", "y", "z", "vx", "vy", "vz", "moving_prob"))]
        assert moving["frame"] == "base_link" and moving["n"] <= flow["n"]
        assert set(node_run["frame_stamps"]) <= set(moving["stamps"])
        if moving["n"]:
            assert moving["min_speed"] >= 0.5 - 1e-6 and moving["probs"] == [1.0]
        bev = node_run["bev"]
        assert (bev["w"], bev["h"], bev["res"]) == (100, 100, pytest.approx(0.8))
        assert bev["origin"] == [-40.0, -40.0] and bev["len"] == 100 * 100
        # The untrained model's occupancy is the road layer (centre 0.2 m) and the one beneath it; the
        # default BEV slab (bev.z_min_m 0.3 .. bev.z_max_m 2.5 above the ground) leaves both out, so the
        # road is free in the costmap (the same grid with a -1.0 m lower bound is occupied: max >= 50).
        assert bev["frame"] == "base_link" and 0 <= bev["min"] and bev["max"] < 50, bev
        mk = node_run["markers"]
        assert mk["first_action"] == 3        # Marker.DELETEALL
        assert mk["types"] == [6]             # Marker.CUBE_LIST
        assert 0 < mk["cubes"] <= 500 and mk["frame"] == "base_link"
        # One ARROW (start, end) per moving voxel of the same set, capped at flow.max_arrows (200).
        assert mk["arrows"] == min(mk["moving_in_that_set"], 200)
        if mk["arrows"]:
            assert mk["arrow_types"] == [0] and mk["arrow_points"] == [2]

    def test_depth_image_is_32fc1_in_the_optical_frame(self, node_run):
        d = node_run["depth"]
        assert d["encoding"] == "32FC1" and d["frame"] == "CAM_FRONT"
        assert d["size"] == [44, 24] and d["step"] == 44 * 4          # tiny model: 176x96 / 4
        assert d["stamp"] == node_run["frame_stamps"][-1]
        assert d["finite_frac"] > 0.9
        # The published image is the offline pipeline's depth of the same frame: same code, same process and
        # float32 weights, so only rounding may differ (1e-5 relative; observed 0). The first frame's depth
        # differs from it by 4e-2 relative (observed), so a stale or wrong-frame image fails.
        assert d["same_invalid_pixels"] and d["offline_max_rel"] < 1e-5
        assert d["other_frame_max_rel"] > 1e-3
        assert node_run["depth_info"] == {"size": [44, 24], "frame": "CAM_FRONT"}

    def test_debug_timings_published(self, node_run):
        assert len(node_run["debug"]["proc"]) >= 3 and all(ms > 0 for ms in node_run["debug"]["proc"])
        assert node_run["debug"]["lat_n"] >= 3

    def test_broken_inputs_are_counted_and_the_node_keeps_running(self, node_run):
        c = node_run["counters"]
        assert c["drop_bad_encoding"] == 1
        assert c["drop_image_size_mismatch"] == 1
        assert c["drop_lidar_nonfinite_points"] >= 1
        assert c["sync_resets"] == 1 and c["drop_clock_jump_back"] >= 1
        # The set missing CAM_BACK_RIGHT never completes: its 5 camera messages are dropped (discarded
        # when the synchronizer restarts at the clock jump); its cloud waits in the LiDAR buffer.
        assert c["messages_dropped"] >= 5
        assert c["sets_complete"] == 3 + 4 + 1 - 1     # good, bad-encoding/size/NaN, loop (missing one never)
        # Output resumed after the NaN cloud and after the clock jump.
        assert node_run["occ_after_bad"] == [node_run["frame_stamps"][-1] + 1_300_000_000, node_run["frame_stamps"][0]]
        assert c["frames_processed"] == 5

    def test_diagnostics_report_the_counters(self, node_run):
        diag = node_run["diag"]
        assert diag["n"] >= 2
        last = diag["last"]
        assert int(last["drop_bad_encoding"]) == 1 and int(last["frames_processed"]) == 5
        assert int(last["sets_complete"]) == node_run["counters"]["sets_complete"]
        # WARN while the bad sets are inside the diagnostics window, naming the causes.
        assert diag["level"] == 1 and "bad_encoding=1" in diag["message"], diag["message"]


BAD_PARAM_SCRIPT = r"""
import json, rclpy
from rclpy.parameter import Parameter
from mv4d_core.pipeline.config import ConfigError
from mv4d_ros.perception_node import PerceptionNode
rclpy.init()
out = {}
for name, value in [("sync.slop_s", -1.0), ("engine", "caffe"), ("rig_file", "/nonexistent/rig.yaml"),
                    ("checkpoint", "/nonexistent/model.pt")]:
    try:
        PerceptionNode(node_name="bad_" + name.replace(".", "_"), parameter_overrides=[Parameter(name, value=value)]
                       + ([] if name == "rig_file" else [Parameter("rig_file", value=RIG)]))
        out[name] = None
    except ConfigError as e:
        out[name] = [e.parameter, str(e)]
from mv4d_ros.tf_listener import tf2_msgs_available
if not tf2_msgs_available():
    # No rig file and no way to read /tf_static: refuse rather than wait forever.
    try:
        PerceptionNode(node_name="bad_no_rig", parameter_overrides=[Parameter("checkpoint", value=CKPT)])
        out["no_rig"] = None
    except ConfigError as e:
        out["no_rig"] = [e.parameter, str(e)]
print(json.dumps(out))
rclpy.shutdown()
"""


@pytest.mark.ros
def test_invalid_parameters_refuse_to_start_naming_the_parameter(ros_netns, tmp_path):
    from mv4d_core.data.synth import synthetic_rig
    rig = tmp_path / "rig.yaml"
    synthetic_rig("tiny").save_yaml(rig)
    script = BAD_PARAM_SCRIPT.replace("RIG)", f"{str(rig)!r})").replace("CKPT)", "'/nonexistent/m.pt')")
    out = ros_netns.check_python(script, timeout=120)
    res = json.loads(out.strip().splitlines()[-1])
    if "no_rig" in res:
        assert res["no_rig"][0] == "rig_file" and "tf2_msgs" in res["no_rig"][1]
    for name in ("sync.slop_s", "engine", "rig_file", "checkpoint"):
        assert res[name] is not None, f"{name}: node started with an invalid value"
        assert res[name][0] == name and f"parameter '{name}'" in res[name][1]


PARAM_FILE_SCRIPT = r"""
import json, sys, rclpy
rclpy.init(args=["x", "--ros-args", "--params-file", PARAMS, "-p", "rig_file:=" + RIG, "-p", "checkpoint:=" + CKPT])
from mv4d_ros.perception_node import PerceptionNode
node = PerceptionNode()
print(json.dumps({"config": node.config.to_flat_dict(),
                  "topics": sorted(t for t, _ in node.get_topic_names_and_types())}))
rclpy.shutdown()
"""


@pytest.mark.ros
def test_shipped_parameter_file_loads_through_real_rclpy(ros_netns, tmp_path, request):
    from mv4d_core.data.synth import synthetic_rig
    from mv4d_core.models import ModelConfig, build_model
    from mv4d_core.pipeline.config import PerceptionConfig
    from mv4d_core.training.checkpoint import save_atomic

    params = request.config.rootpath / "config" / "mv4d.param.yaml"
    synthetic_rig("tiny").save_yaml(tmp_path / "rig.yaml")
    cfg = ModelConfig.tiny()
    save_atomic({"model_config": cfg.to_dict(), "model": build_model(cfg).state_dict()}, tmp_path / "m.pt")
    script = (PARAM_FILE_SCRIPT.replace("PARAMS", repr(str(params))).replace("RIG", repr(str(tmp_path / "rig.yaml")))
              .replace("CKPT", repr(str(tmp_path / "m.pt"))))
    res = json.loads(ros_netns.check_python(script, timeout=120).strip().splitlines()[-1])
    expected = PerceptionConfig.from_yaml(params).to_flat_dict()
    expected.update(rig_file=str(tmp_path / "rig.yaml"), checkpoint=str(tmp_path / "m.pt"))
    assert res["config"] == expected
    topics = set(res["topics"])
    for cam in expected["camera_names"]:
        assert f"/mv4d_perception/input/{cam}/image" in topics
        assert f"/mv4d_perception/output/depth/{cam}" in topics
    assert {"/mv4d_perception/output/occupancy", "/mv4d_perception/output/points", "/mv4d_perception/output/flow",
            "/mv4d_perception/output/moving", "/mv4d_perception/output/occupancy_bev", "/diagnostics"} <= topics
    assert "/mv4d_perception/output/occupancy_markers" not in topics      # publish.markers: false
    assert "/mv4d_perception/input/lidar" not in topics                   # use_lidar: false


COMPRESSED_SCRIPT = r"""
import json, os, tempfile, time
import numpy as np, torch, rclpy
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, PointCloud2
from mv4d_core.data.synth import generate_sequence, synthetic_rig
from mv4d_core.models import ModelConfig, build_model
from mv4d_core.msgs import MsgFactory, rgb_to_compressed, header_stamp_ns, pointcloud2_to_array
from mv4d_core.training.checkpoint import save_atomic
from mv4d_ros.perception_node import PerceptionNode

tmp = tempfile.mkdtemp(); cfg = ModelConfig.tiny(); torch.manual_seed(0)
save_atomic({"model_config": cfg.to_dict(), "model": build_model(cfg).state_dict()}, tmp + "/m.pt")
synthetic_rig("tiny").save_yaml(tmp + "/rig.yaml")
frame = generate_sequence(1, seed=2)[0]
rclpy.init()
node = PerceptionNode(parameter_overrides=[Parameter("rig_file", value=tmp + "/rig.yaml"),
    Parameter("checkpoint", value=tmp + "/m.pt"), Parameter("image_transport", value="compressed"),
    Parameter("input_qos", value="RELIABLE_5"), Parameter("publish.depth", value=False)])
io = rclpy.create_node("io"); f = MsgFactory.rclpy()
pubs = [io.create_publisher(CompressedImage, f"/mv4d_perception/input/{c}/image", 10) for c in frame.camera_names]
got = []
io.create_subscription(PointCloud2, "/mv4d_perception/output/points", got.append,
                       QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
ex = rclpy.executors.SingleThreadedExecutor(); ex.add_node(node); ex.add_node(io)
end = time.monotonic() + 20
while time.monotonic() < end and not (all(p.get_subscription_count() for p in pubs)
                                      and node.pubs["points"].get_subscription_count()):
    ex.spin_once(timeout_sec=0.02)
for i, p in enumerate(pubs):
    p.publish(rgb_to_compressed(frame.images[i], frame.stamp_ns, frame.camera_names[i], factory=f, format="jpeg"))
end = time.monotonic() + 60
while not got and time.monotonic() < end:
    ex.spin_once(timeout_sec=0.02)
arr = pointcloud2_to_array(got[0])
print(json.dumps({"stamp_ok": header_stamp_ns(got[0]) == frame.stamp_ns, "n": int(arr.shape[0]),
                  "depth_topics": [t for t, _ in node.get_topic_names_and_types() if "/output/depth" in t],
                  "counters": node.counters()}))
ex.shutdown(); node.destroy_node(); io.destroy_node(); rclpy.shutdown()
"""


@pytest.mark.ros
def test_compressed_input_with_reliable_qos_and_depth_output_off(ros_netns):
    res = json.loads(ros_netns.check_python(COMPRESSED_SCRIPT, timeout=180).strip().splitlines()[-1])
    assert res["stamp_ok"] and res["n"] > 0
    assert res["depth_topics"] == []                         # publish.depth: false creates no depth topic
    assert res["counters"]["frames_processed"] == 1
    assert not any(k.startswith("drop_") for k in res["counters"])


ODOMETRY_SCRIPT = r"""
import json, os, tempfile, time
import numpy as np, torch, rclpy
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from sensor_msgs.msg import Image, PointCloud2
from mv4d_core.data.synth import generate_sequence, synthetic_rig
from mv4d_core.models import ModelConfig, build_model
from mv4d_core.models.inputs import relative_pose
from mv4d_core.msgs import MsgFactory, header_stamp_ns, rgb_to_image
from mv4d_core.msgs.tf import matrix_to_odometry
from mv4d_core.engines import create_engine
from mv4d_core.training.checkpoint import save_atomic
from mv4d_ros.perception_node import PerceptionNode

tmp = tempfile.mkdtemp(); cfg = ModelConfig.tiny(); torch.manual_seed(0)
save_atomic({"model_config": cfg.to_dict(), "model": build_model(cfg).state_dict()}, tmp + "/m.pt")
synthetic_rig("tiny").save_yaml(tmp + "/rig.yaml")
frames = generate_sequence(3, seed=3)
CAMS = list(frames[0].camera_names)
# The real engine, wrapped to record the ego motion the pipeline hands it.
engine = create_engine("torch", tmp + "/m.pt")
seen, infer = [], engine.infer
def recording_infer(inputs):
    seen.append(None if inputs.T_prev_cur is None else inputs.T_prev_cur.tolist())
    return infer(inputs)
engine.infer = recording_infer
rclpy.init()
node = PerceptionNode(engine=engine, parameter_overrides=[
    Parameter("rig_file", value=tmp + "/rig.yaml"), Parameter("use_odometry", value=True),
    Parameter("publish.depth", value=False), Parameter("diagnostics_period_s", value=0.2)])
io = rclpy.create_node("io"); f = MsgFactory.rclpy()
img_pubs = {c: io.create_publisher(Image, f"/mv4d_perception/input/{c}/image", 10) for c in CAMS}
odom_pub = io.create_publisher(Odometry, "/mv4d_perception/input/odometry", 10)
occ, diag = [], []
io.create_subscription(PointCloud2, "/mv4d_perception/output/occupancy", occ.append,
                       QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
io.create_subscription(DiagnosticArray, "/diagnostics", diag.append, 10)
ex = rclpy.executors.SingleThreadedExecutor(); ex.add_node(node); ex.add_node(io)

def spin_until(cond, timeout):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        ex.spin_once(timeout_sec=0.02)
    return cond()

assert spin_until(lambda: all(p.get_subscription_count() for p in [*img_pubs.values(), odom_pub])
                  and node.pubs["occupancy"].get_subscription_count(), 20), "discovery failed"

def publish_odometry(stamp, T, spread_m):
    # Two samples 20 ms either side of the set stamp, offset -/+spread_m along world x: only the
    # interpolation gives T back (spread_m differs per set, so a nearest-sample pose would not
    # cancel out in the relative motion).
    n = node.counters()["odometry_received"]
    for dt, dx in ((-20_000_000, -spread_m), (20_000_000, spread_m)):
        Ts = T.copy(); Ts[0, 3] += dx
        odom_pub.publish(matrix_to_odometry(Ts, "odom", "base_link", stamp + dt, factory=f))
    assert spin_until(lambda: node.counters()["odometry_received"] == n + 2, 10), "odometry not received"

def publish_set(frame, stamp):
    for i, c in enumerate(CAMS):
        img_pubs[c].publish(rgb_to_image(frame.images[i], stamp, c, factory=f))
    assert spin_until(lambda: stamp in [header_stamp_ns(m) for m in occ], 60), \
        f"no output for {stamp}: {node.counters()}"
    return node.counters()

res = {"stamps": [], "counters": []}
# 1) three frames, each with odometry around its stamp.
for i, fr in enumerate(frames):
    publish_odometry(fr.stamp_ns, fr.T_world_base, 0.2 * (i + 1))
    res["counters"].append(publish_set(fr, fr.stamp_ns)); res["stamps"].append(fr.stamp_ns)
res["expected_T_prev_cur"] = [relative_pose(frames[i - 1].T_world_base, frames[i].T_world_base).tolist()
                              for i in (1, 2)]
# 2) a set 100 ms later with no odometry near it (the newest sample is 80 ms older than the set).
s3 = frames[-1].stamp_ns + 100_000_000
res["counters"].append(publish_set(frames[-1], s3)); res["stamps"].append(s3)
# 3) odometry resumes: the first set after the gap has no predecessor pose, the next one fuses.
for k in (1, 2):
    s = s3 + k * 100_000_000
    publish_odometry(s, frames[-1].T_world_base, 0.2)
    res["counters"].append(publish_set(frames[-1], s)); res["stamps"].append(s)
spin_until(lambda: False, 0.5)  # let diagnostics go out
last = [s for a in diag for s in a.status if s.name == "mv4d_perception: perception"][-1]
res["diag"] = {kv.key: kv.value for kv in last.values}
res["seen"] = seen
res["occ_stamps"] = [header_stamp_ns(m) for m in occ]
print(json.dumps(res))
ex.shutdown(); node.destroy_node(); io.destroy_node(); rclpy.shutdown()
"""


@pytest.fixture(scope="module")
def odometry_run():
    return run_namespaced_json(ODOMETRY_SCRIPT, "test_perception_node_odometry", timeout=180)


@pytest.mark.ros
class TestOdometryTemporalFusion:
    def test_odometry_poses_drive_temporal_fusion_with_the_ego_motion(self, odometry_run):
        import numpy as np

        first3 = odometry_run["counters"][:3]
        # Every frame after the first fuses its predecessor's volume; no set lacked a pose.
        assert [c["frames_temporal_fused"] for c in first3] == [0, 1, 2]
        assert all("drop_odometry_missing" not in c for c in first3)
        assert first3[-1]["odometry_received"] == 6
        seen = odometry_run["seen"]
        assert seen[0] is None
        # The engine got T_prev_cur = inv(T_world_prev) @ T_world_cur from the poses interpolated
        # at the set stamps (midway between the two odometry samples around each stamp).
        for got, want in zip(seen[1:3], odometry_run["expected_T_prev_cur"]):
            np.testing.assert_allclose(np.array(got), np.array(want), atol=1e-4)
        assert np.linalg.norm(np.array(seen[1])[:3, 3]) > 0.5     # the synthetic ego really moved

    def test_set_without_odometry_is_counted_and_still_published_without_fusion(self, odometry_run):
        c = odometry_run["counters"]
        assert c[3]["drop_odometry_missing"] == 1 and c[3]["frames_processed"] == 4
        assert c[3]["frames_temporal_fused"] == 2                  # nothing fused into the pose-less set
        assert odometry_run["seen"][3] is None and odometry_run["seen"][4] is None  # ... nor out of it
        assert c[4]["frames_temporal_fused"] == 2 and c[5]["frames_temporal_fused"] == 3
        assert odometry_run["seen"][5] is not None
        assert c[5]["drop_odometry_missing"] == 1 and c[5]["frames_processed"] == 6
        # One output per set, the pose-less one included, each with its set's stamp.
        assert odometry_run["occ_stamps"] == odometry_run["stamps"]
        d = odometry_run["diag"]
        assert int(d["frames_temporal_fused"]) == 3 and int(d["drop_odometry_missing"]) == 1
