"""The node side of LiDAR fusion, over real DDS in a loopback namespace.

With ``use_lidar`` the node hands a fusion engine (``engine.spec.lidar``) the same LiDAR inputs the
offline pipeline builds from the same frame: the cloud in base_link with its intensity and ring, the
sensor origin from the rig (``T_base_lidar``), and with odometry the previous sweep. A set whose
cloud is unusable is processed camera-only and counted (``lidar_missing``); a fusion model without
``use_lidar`` runs camera-only and ``/diagnostics`` says so. When the cameras stop and the LiDAR goes
on, the fusion model runs on the clouds alone until the next complete set.
"""

from __future__ import annotations

import pytest

LIDAR_SCRIPT = r"""
import json, sys, tempfile, threading, time
import numpy as np, rclpy
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from sensor_msgs.msg import Image, PointCloud2
from mv4d_core.data.synth import generate_sequence, synthetic_rig
from mv4d_core.geometry.transforms import invert_transform, transform_points
from mv4d_core.msgs import MsgFactory, header_stamp_ns, rgb_to_image, xyz_to_pointcloud2
from mv4d_core.msgs.tf import matrix_to_odometry
from mv4d_core.pipeline.config import PerceptionConfig
from mv4d_core.pipeline.pipeline import PerceptionPipeline
from mv4d_ros.perception_node import PerceptionNode
from polling import wait_until as wait
from stub_engine import SlowStubEngine

tmp = tempfile.mkdtemp(); rig = synthetic_rig("tiny"); rig.save_yaml(tmp + "/rig.yaml")
frames = generate_sequence(2, seed=3)
CAMS = list(frames[0].camera_names)
T_lidar_base = invert_transform(rig.lidar.T_base_lidar)
rclpy.init()

class Recording(SlowStubEngine):
    def infer(self, inputs):
        self.last = inputs
        self.seen = getattr(self, "seen", []) + [None if inputs.lidar_volume is None else
                                                 (inputs.lidar_volume.copy(), inputs.lidar_depth.copy())]
        return super().infer(inputs)

def make_node(name, use_lidar, engine):
    return PerceptionNode(engine=engine, node_name=name, parameter_overrides=[
        Parameter("rig_file", value=tmp + "/rig.yaml"), Parameter("use_lidar", value=use_lidar),
        Parameter("use_odometry", value=True), Parameter("publish.depth", value=False),
        Parameter("diagnostics_period_s", value=0.2), Parameter("lidar_only_after_s", value=0.0)])

fusion = Recording(0.01, lidar=True)
node = make_node("fusion_node", True, fusion)
cam_only_engine = Recording(0.01, lidar=True)
cam_only = make_node("fusion_without_lidar", False, cam_only_engine)
io = rclpy.create_node("io"); f = MsgFactory.rclpy()
pubs = {n: {c: io.create_publisher(Image, f"/{n}/input/{c}/image", 10) for c in CAMS}
        for n in ("fusion_node", "fusion_without_lidar")}
lidar_pub = io.create_publisher(PointCloud2, "/fusion_node/input/lidar", 10)
odom_pubs = {n: io.create_publisher(Odometry, f"/{n}/input/odometry", 50) for n in pubs}
occ = {n: [] for n in pubs}
diag = []
for n in pubs:
    io.create_subscription(PointCloud2, f"/{n}/output/occupancy", lambda m, n=n: occ[n].append(header_stamp_ns(m)),
                           QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
io.create_subscription(DiagnosticArray, "/diagnostics", diag.append, 10)
ex = rclpy.executors.SingleThreadedExecutor()
for x in (node, cam_only, io):
    ex.add_node(x)
threading.Thread(target=ex.spin, daemon=True).start()
wait(lambda: all(p.get_subscription_count() for d in pubs.values() for p in d.values())
     and lidar_pub.get_subscription_count() and node.pubs["occupancy"].get_subscription_count()
     and cam_only.pubs["occupancy"].get_subscription_count())

def publish(name, fr, stamp, xyz=None, lidar=True, lidar_stamp=None):
    for dt in (-20_000_000, 20_000_000):       # odometry around the stamp: the set has a pose
        odom_pubs[name].publish(matrix_to_odometry(fr.T_world_base, "odom", "base_link", stamp + dt, factory=f))
    if lidar:
        # The cloud first and received before the images go out: which arrives first is not what these
        # cases test (the node waits up to sync.slop_s for a cloud still on its way).
        pts = fr.lidar_xyz if xyz is None else xyz
        cloud = transform_points(T_lidar_base, pts.astype(np.float64)).astype(np.float32)
        ls = stamp if lidar_stamp is None else lidar_stamp
        lidar_pub.publish(xyz_to_pointcloud2(cloud, ls, "LIDAR_TOP", factory=f, extra={
            "intensity": fr.lidar_intensity.astype(np.float32), "ring": fr.lidar_ring.astype(np.uint16)}))
        assert wait(lambda: node.lidar_buffer.newest_ns == ls), "cloud not received"
    time.sleep(0.05)
    for i, c in enumerate(CAMS):
        pubs[name][c].publish(rgb_to_image(fr.images[i], stamp, c, factory=f))
    assert wait(lambda: stamp in occ[name]), f"{name}: no output for {stamp}"

res = {}
for fr in frames:
    publish("fusion_node", fr, fr.stamp_ns)
# The same frames through the offline pipeline (what mv4d infer / eval run) with a recording engine.
offline_engine = Recording(0.0, lidar=True)
offline = PerceptionPipeline(offline_engine, node.config, temporal=True)
for fr in frames:
    offline.process(fr)
def max_diff(a, b):
    return float(np.abs(a - b).max())
res["node_vs_offline"] = [{"volume": max_diff(n[0], o[0]), "depth": max_diff(n[1], o[1]),
                            "volume_sum": float(n[0].sum()), "intensity_max": float(n[0][2].max()),
                            "previous_count_sum": float(n[0][4].sum()) if n[0].shape[0] > 4 else None}
                           for n, o in zip(fusion.seen, offline_engine.seen)]
res["channels"] = int(fusion.seen[0][0].shape[0])
# A cloud with no finite point: processed camera-only, counted.
bad = np.full_like(frames[-1].lidar_xyz, np.nan)
publish("fusion_node", frames[-1], frames[-1].stamp_ns + 100_000_000, xyz=bad)
res["bad_cloud_engine_got_lidar"] = fusion.seen[-1] is not None
res["counters"] = node.counters()
# A cloud 0.3 s off the cameras' stamp (sync.slop_s 0.08): the cameras still make a set, processed
# camera-only; then the LiDAR stops and the node keeps publishing camera-only.
t = frames[-1].stamp_ns + 200_000_000
publish("fusion_node", frames[-1], t, lidar_stamp=t + 300_000_000)
res["off_slop_engine_got_lidar"] = fusion.seen[-1] is not None
for k in (15, 16):                             # 1.2 s after the last cloud: the LiDAR has stopped
    publish("fusion_node", frames[-1], t + k * 100_000_000, lidar=False)
res["stopped_engine_got_lidar"] = [x is not None for x in fusion.seen[-2:]]
res["counters_after"] = node.counters()
# A fusion model with use_lidar false: camera-only, and diagnostics say so.
publish("fusion_without_lidar", frames[0], frames[0].stamp_ns, lidar=False)
res["cam_only_got_lidar"] = cam_only_engine.seen[-1] is not None
time.sleep(0.5)
st = [s for a in diag for s in a.status if s.name == "fusion_without_lidar: perception"][-1]
res["cam_only_diag"] = [st.level[0] if isinstance(st.level, bytes) else int(st.level), st.message]
print(json.dumps(res))
ex.shutdown(); node.destroy_node(); cam_only.destroy_node(); io.destroy_node(); rclpy.shutdown()
"""


@pytest.fixture(scope="module")
def lidar_run():
    from netns import run_namespaced_json

    return run_namespaced_json(LIDAR_SCRIPT, "test_node_lidar", timeout=240)


@pytest.mark.ros
def test_fusion_engine_gets_the_offline_lidar_inputs(lidar_run):
    from mv4d_core.models.lidar_inputs import volume_channels

    assert lidar_run["channels"] == volume_channels(1)
    first, second = lidar_run["node_vs_offline"]
    for d in (first, second):
        # The cloud crossed DDS in the LiDAR frame (float32) and came back to base_link: the inputs equal
        # the offline ones up to float rounding (observed 9e-8 in the volume, 1.5e-5 m in the depth).
        assert d["volume"] < 1e-3 and d["depth"] < 1e-3, d
        assert d["volume_sum"] > 0 and d["intensity_max"] > 0          # intensity reached the volume
    # With odometry the second set carries the first sweep as its previous one.
    assert first["previous_count_sum"] == 0 and second["previous_count_sum"] > 0


@pytest.mark.ros
def test_unusable_cloud_is_processed_camera_only_and_counted(lidar_run):
    c = lidar_run["counters"]
    assert not lidar_run["bad_cloud_engine_got_lidar"]
    assert c["lidar_frames"] == 2 and c["lidar_missing"] == 1 and c["frames_processed"] == 3
    assert c["drop_lidar_nonfinite_points"] == 1


@pytest.mark.ros
def test_a_cloud_outside_the_slop_or_a_stopped_lidar_leaves_the_cameras_running_camera_only(lidar_run):
    # The cameras alone make a set; the cloud joins it only within sync.slop_s of its stamp.
    assert not lidar_run["off_slop_engine_got_lidar"]
    assert lidar_run["stopped_engine_got_lidar"] == [False, False]
    c = lidar_run["counters_after"]
    assert c["frames_processed"] == 3 + 3
    assert c["lidar_unmatched_sets"] == 3 and c["drop_lidar_unmatched"] == 3 and c["lidar_missing"] == 1 + 3


@pytest.mark.ros
def test_fusion_model_without_use_lidar_runs_camera_only_and_says_so(lidar_run):
    assert not lidar_run["cam_only_got_lidar"]
    level, message = lidar_run["cam_only_diag"]
    assert level == 1 and "the model takes the LiDAR but use_lidar is false" in message


LIDAR_ONLY_SCRIPT = r"""
import json, sys, tempfile, threading, time
import numpy as np, rclpy
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image, PointCloud2
from mv4d_core.data.synth import generate_sequence, synthetic_rig
from mv4d_core.geometry.transforms import invert_transform, transform_points
from mv4d_core.msgs import MsgFactory, header_stamp_ns, rgb_to_image, xyz_to_pointcloud2
from mv4d_ros.perception_node import PerceptionNode
from polling import wait_until as wait
from stub_engine import SlowStubEngine

tmp = tempfile.mkdtemp(); rig = synthetic_rig("tiny"); rig.save_yaml(tmp + "/rig.yaml")
fr = generate_sequence(1, seed=3)[0]
CAMS = list(fr.camera_names)
rclpy.init()

class Recording(SlowStubEngine):
    def infer(self, inputs):
        self.seen = getattr(self, "seen", []) + [(int(inputs.images.shape[0]), inputs.lidar_volume is not None)]
        return super().infer(inputs)

engine = Recording(0.01, lidar=True)
node = PerceptionNode(engine=engine, parameter_overrides=[
    Parameter("rig_file", value=tmp + "/rig.yaml"), Parameter("use_lidar", value=True),
    Parameter("publish.depth", value=False), Parameter("diagnostics_period_s", value=0.2),
    Parameter("lidar_only_after_s", value=0.5)])
io = rclpy.create_node("io"); f = MsgFactory.rclpy()
pubs = {c: io.create_publisher(Image, f"/mv4d_perception/input/{c}/image", 10) for c in CAMS}
lidar_pub = io.create_publisher(PointCloud2, "/mv4d_perception/input/lidar", 10)
occ, diag = [], []
io.create_subscription(PointCloud2, "/mv4d_perception/output/occupancy", lambda m: occ.append(header_stamp_ns(m)),
                       QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
io.create_subscription(DiagnosticArray, "/diagnostics", diag.append, 10)
ex = rclpy.executors.SingleThreadedExecutor(); ex.add_node(node); ex.add_node(io)
threading.Thread(target=ex.spin, daemon=True).start()
wait(lambda: all(p.get_subscription_count() for p in pubs.values()) and lidar_pub.get_subscription_count()
     and node.pubs["occupancy"].get_subscription_count())
cloud = transform_points(invert_transform(rig.lidar.T_base_lidar), fr.lidar_xyz.astype(np.float64)).astype(np.float32)

def send(stamp, cameras):
    lidar_pub.publish(xyz_to_pointcloud2(cloud, stamp, "LIDAR_TOP", factory=f, extra={
        "intensity": fr.lidar_intensity.astype(np.float32), "ring": fr.lidar_ring.astype(np.uint16)}))
    assert wait(lambda: node.lidar_buffer.newest_ns == stamp), "cloud not received"
    if cameras:
        for i, c in enumerate(CAMS):
            pubs[c].publish(rgb_to_image(fr.images[i], stamp, c, factory=f))
        assert wait(lambda: stamp in occ), f"no output for {stamp}"
    else:
        wait(lambda: stamp in occ, 1.0)               # LiDAR-only outputs come when due, none before
    node.worker.wait_idle(5)

T0, P = 100 * 10**9, 100_000_000
stamps = {"sets": [], "clouds": [], "back": []}
for k in range(3):                                # cameras and LiDAR
    stamps["sets"].append(T0 + k * P); send(stamps["sets"][-1], True)
for k in range(3, 13):                            # the cameras stop; the LiDAR goes on for 1 s
    stamps["clouds"].append(T0 + k * P); send(stamps["clouds"][-1], False)
time.sleep(0.5)
st = [s for a in diag for s in a.status if s.name == "mv4d_perception: perception"][-1]
during = [st.level[0] if isinstance(st.level, bytes) else int(st.level), st.message]
counters_during = node.counters()
for k in range(13, 16):                           # the cameras are back
    stamps["back"].append(T0 + k * P); send(stamps["back"][-1], True)
print(json.dumps({"stamps": stamps, "out": occ, "seen": engine.seen, "during": during,
                  "counters_during": counters_during, "counters_after": node.counters()}))
ex.shutdown(); node.destroy_node(); io.destroy_node(); rclpy.shutdown()
"""


@pytest.fixture(scope="module")
def lidar_only_run():
    from netns import run_namespaced_json

    return run_namespaced_json(LIDAR_ONLY_SCRIPT, "test_node_lidar_only", timeout=240)


@pytest.mark.ros
def test_when_the_cameras_stop_the_fusion_model_runs_on_the_lidar_alone_until_they_return(lidar_only_run):
    r = lidar_only_run
    last_set = r["stamps"]["sets"][-1]
    alone = [s for s in r["stamps"]["clouds"] if s in r["out"]]
    # Due by sensor time: clouds stamped more than lidar_only_after_s (0.5 s) after the last complete
    # set, each waited for, so every one of them (stamps +0.6 .. +1.0 s) is processed and none earlier.
    assert alone == [s for s in r["stamps"]["clouds"] if s - last_set > 500_000_000], alone
    assert len(alone) == 5
    c = r["counters_during"]
    assert c["lidar_only_frames"] == 5 and c["frames_processed"] == 3 + 5
    # The engine got those clouds with no camera and its LiDAR inputs.
    assert r["seen"][3:8] == [[0, True]] * 5
    level, message = r["during"]
    assert level >= 1 and "LiDAR-only: " in message and "no depth" in message, message
    # Back with the cameras: every set is processed with its six cameras again. The first returning
    # cloud arrives before its images, while the cameras still look stopped: it may run alone once.
    assert all(s in r["out"] for s in r["stamps"]["back"])
    assert r["seen"][-2:] == [[6, True]] * 2
    assert r["counters_after"]["lidar_only_frames"] - c["lidar_only_frames"] <= 1
