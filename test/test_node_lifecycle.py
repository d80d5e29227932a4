"""Strict parameters and the lifecycle node, over real DDS in a loopback namespace.

* ``perception_node`` as a process (``python -m mv4d_ros.perception_node``): a misspelled parameter
  on the command line or in a parameter file, an invalid value, a missing or unparsable parameter
  file each end in one ``[FATAL] ... refusing to start: ...`` line and exit status 2, no traceback.
* Parameter descriptors (what ``ros2 param describe`` shows) carry type, range and description.
* ``perception_node --lifecycle`` driven through its lifecycle services: configure loads and checks
  the engine, activate subscribes and publishes, deactivate stops, cleanup frees; a configure that
  fails (bad ``rig_file``) leaves it unconfigured and parameters can be fixed and retried.
"""

from __future__ import annotations

import json
import sys

import pytest

# Each case: extra --ros-args, a parameter file body (or None), what the one FATAL line must contain.
STARTUP_CASES = {
    "typo_on_command_line": (["-p", "sync.slopp_s:=0.1"], None,
                             "parameter 'sync.slopp_s': unknown parameter (a typo?); did you mean 'sync.slop_s'?"),
    "typo_in_parameter_file": ([], "/**:\n  ros__parameters:\n    use_lidr: true\n",
                               "parameter 'use_lidr': unknown parameter (a typo?); did you mean 'use_lidar'?"),
    "invalid_value": (["-p", "sync.slop_s:=-1.0"], None, "parameter 'sync.slop_s': must be > 0.0, got -1.0"),
    "wrong_type": (["-p", "use_lidar:=maybe"], None, "parameter 'use_lidar': expected true/false, got 'maybe'"),
    "missing_parameter_file": (["--params-file", "/nonexistent/params.yaml"], None,
                               "parameter file '/nonexistent/params.yaml' does not exist"),
    "unparsable_parameter_file": ([], "/**:\n  ros__parameters:\n    sync: {slop_s: [0.1\n", "is not valid YAML"),
    "no_ros_parameters_section": ([], "camera_names: [CAM_FRONT]\n", "has no '<node name or /**>: ros__parameters:'"),
    "bad_ros_argument": (["-p", "sync.slop_s"], None, "'-p sync.slop_s' is not name:=value (--ros-args)"),
    "missing_rig_file": (["-p", "rig_file:=/nonexistent/rig.yaml"], None, "parameter 'rig_file': "),
}

STARTUP_SCRIPT = r"""
import json, os, subprocess, sys, tempfile
cases = json.loads(CASES)
out = {}
tmp = tempfile.mkdtemp()
for name, (extra, body, _) in cases.items():
    args = list(extra)
    if body is not None:
        path = os.path.join(tmp, name + ".yaml")
        open(path, "w").write(body)
        args = ["--params-file", path] + args
    r = subprocess.run([sys.executable, "-m", "mv4d_ros.perception_node", "--ros-args", *args],
                       capture_output=True, text=True, timeout=120)
    out[name] = [r.returncode, r.stderr]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def startup_run():
    from netns import run_namespaced_json

    script = STARTUP_SCRIPT.replace("CASES", repr(json.dumps(STARTUP_CASES)))
    return run_namespaced_json(script, "test_node_startup", timeout=600)


@pytest.mark.ros
@pytest.mark.parametrize("case", sorted(STARTUP_CASES))
def test_startup_errors_are_one_fatal_line_and_exit_2(startup_run, case):
    rc, stderr = startup_run[case]
    lines = [ln for ln in stderr.splitlines() if ln.strip() and "ROS_LOCALHOST_ONLY" not in ln
             and "'localhost_only' is enabled" not in ln]
    assert rc == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("[FATAL] [mv4d_perception]: refusing to start: "), lines[0]
    assert STARTUP_CASES[case][2] in lines[0], lines[0]


LIFECYCLE_SCRIPT = r"""
import json, sys, tempfile, threading, time
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import DescribeParameters, SetParameters
from sensor_msgs.msg import Image, PointCloud2
from mv4d_core.data.synth import generate_sequence, synthetic_rig
from mv4d_core.msgs import MsgFactory, header_stamp_ns, rgb_to_image
from mv4d_ros.perception_node import LifecyclePerceptionNode
from polling import wait_until
from stub_engine import SlowStubEngine

tmp = tempfile.mkdtemp(); synthetic_rig("tiny").save_yaml(tmp + "/rig.yaml")
frame = generate_sequence(1, seed=2)[0]
CAMS = list(frame.camera_names)
rclpy.init()
node = LifecyclePerceptionNode(engine=SlowStubEngine(0.05), parameter_overrides=[
    Parameter("rig_file", value=tmp + "/missing_rig.yaml"), Parameter("publish.depth", value=False),
    Parameter("sync.slop_s", value=1)])      # an integer for a double parameter is that number
io = rclpy.create_node("lifecycle_client"); f = MsgFactory.rclpy()
pubs = {c: io.create_publisher(Image, f"/mv4d_perception/input/{c}/image", 10) for c in CAMS}
out = []
io.create_subscription(PointCloud2, "/mv4d_perception/output/occupancy", lambda m: out.append(header_stamp_ns(m)),
                       QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
ex = rclpy.executors.SingleThreadedExecutor(); ex.add_node(node); ex.add_node(io)
threading.Thread(target=ex.spin, daemon=True).start()
change = io.create_client(ChangeState, "/mv4d_perception/change_state")
get = io.create_client(GetState, "/mv4d_perception/get_state")
setp = io.create_client(SetParameters, "/mv4d_perception/set_parameters")
desc = io.create_client(DescribeParameters, "/mv4d_perception/describe_parameters")
for c in (change, get, setp, desc):
    assert c.wait_for_service(timeout_sec=30), c.srv_name
def call(client, req):
    fut = client.call_async(req)
    wait_until(fut.done, 60, period_s=0.01)
    return fut.result()
def state():
    return call(get, GetState.Request()).current_state.label
def transition(tid):
    return call(change, ChangeState.Request(transition=Transition(id=tid))).success
def set_param(name, value):
    r = call(setp, SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()]))
    return [r.results[0].successful, r.results[0].reason]
def subscribed(timeout=10.0, want=True):
    return wait_until(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()) == want, timeout, 0.05)
def send(stamp):
    for i, c in enumerate(CAMS):
        pubs[c].publish(rgb_to_image(frame.images[i], stamp, c, factory=f))
def output_for(stamp, timeout=10.0):
    return wait_until(lambda: stamp in out, timeout)
res = {"steps": []}
def step(name, **kw):
    res["steps"].append({"step": name, "state": state(), **kw})
step("start", subscribed=subscribed(1.0))
d = call(desc, DescribeParameters.Request(names=["sync.slop_s", "sync.queue_size", "engine", "rig_file"])).descriptors
res["describe"] = {x.name: {"type": x.type, "description": x.description, "read_only": x.read_only,
                             "constraints": x.additional_constraints,
                             "fp": [[r.from_value, r.to_value] for r in x.floating_point_range],
                             "int": [[r.from_value, r.to_value] for r in x.integer_range]} for x in d}
res["slop"] = node.get_parameter("sync.slop_s").value
step("configure with a missing rig_file", ok=transition(Transition.TRANSITION_CONFIGURE))
res["set_invalid"] = set_param("sync.queue_size", 0)
res["set_rig"] = set_param("rig_file", tmp + "/rig.yaml")
step("configure", ok=transition(Transition.TRANSITION_CONFIGURE), engine=node.pipeline is not None,
     subscribed=subscribed(1.0))
res["set_while_configured"] = set_param("rig_file", "/elsewhere.yaml")
step("activate", ok=transition(Transition.TRANSITION_ACTIVATE), subscribed=subscribed())
send(5 * 10**9)
step("output while active", got=output_for(5 * 10**9))
step("deactivate", ok=transition(Transition.TRANSITION_DEACTIVATE), unsubscribed=subscribed(want=False))
send(6 * 10**9)
step("output while inactive", got=output_for(6 * 10**9, timeout=1.5))
step("activate again", ok=transition(Transition.TRANSITION_ACTIVATE), subscribed=subscribed())
send(7 * 10**9)
step("output after reactivation", got=output_for(7 * 10**9))
step("deactivate again", ok=transition(Transition.TRANSITION_DEACTIVATE))
step("cleanup", ok=transition(Transition.TRANSITION_CLEANUP), engine=node.pipeline is not None)
res["set_after_cleanup"] = set_param("diagnostics_period_s", 0.5)
step("shutdown", ok=transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN))
from mv4d_ros.perception_node import PerceptionNode
plain = PerceptionNode(engine=SlowStubEngine(0.05), node_name="plain",
                       parameter_overrides=[Parameter("rig_file", value=tmp + "/rig.yaml")])
res["plain_read_only"] = plain.describe_parameter("sync.slop_s").read_only
plain.destroy_node()
print(json.dumps(res))
ex.shutdown(); node.destroy_node(); io.destroy_node(); rclpy.shutdown()
"""


@pytest.fixture(scope="module")
def lifecycle_run():
    from netns import run_namespaced_json

    return run_namespaced_json(LIFECYCLE_SCRIPT, "test_node_lifecycle", timeout=240)


@pytest.mark.ros
def test_lifecycle_transitions_through_the_services(lifecycle_run):
    steps = {s["step"]: s for s in lifecycle_run["steps"]}
    assert steps["start"]["state"] == "unconfigured" and not steps["start"]["subscribed"]
    # A configure that fails (rig_file missing) stays unconfigured ...
    s = steps["configure with a missing rig_file"]
    assert not s["ok"] and s["state"] == "unconfigured"
    # ... parameters can be fixed while unconfigured (still range-checked), and configure succeeds.
    assert lifecycle_run["set_rig"] == [True, ""]
    ok, reason = lifecycle_run["set_invalid"]
    # (rclpy checks the descriptor's range first: "Parameter sync.queue_size out of range. Min: 1, ...")
    assert not ok and "sync.queue_size" in reason and ("Min: 1" in reason or ">= 1" in reason), reason
    s = steps["configure"]
    assert s["ok"] and s["state"] == "inactive" and s["engine"] and not s["subscribed"]
    ok, reason = lifecycle_run["set_while_configured"]
    assert not ok and "only while unconfigured" in reason
    assert steps["activate"]["ok"] and steps["activate"]["state"] == "active" and steps["activate"]["subscribed"]
    assert steps["output while active"]["got"]
    s = steps["deactivate"]
    assert s["ok"] and s["state"] == "inactive" and s["unsubscribed"]
    assert not steps["output while inactive"]["got"]
    assert steps["activate again"]["ok"] and steps["output after reactivation"]["got"]
    s = steps["cleanup"]
    assert s["ok"] and s["state"] == "unconfigured" and not s["engine"]
    assert lifecycle_run["set_after_cleanup"] == [True, ""]
    assert steps["shutdown"]["ok"] and steps["shutdown"]["state"] == "finalized"


@pytest.mark.ros
def test_parameter_descriptors_carry_type_range_and_description(lifecycle_run):
    from rcl_interfaces.msg import ParameterType

    d = lifecycle_run["describe"]
    slop = d["sync.slop_s"]
    assert slop["type"] == ParameterType.PARAMETER_DOUBLE and slop["fp"] == [[0.0, 1.0]]
    assert slop["constraints"] == "> 0; <= 1" and slop["description"].startswith("ApproximateTime slop")
    q = d["sync.queue_size"]
    assert q["type"] == ParameterType.PARAMETER_INTEGER and q["int"] == [[1, 1000]]
    assert d["engine"]["constraints"] == "one of torch, onnxruntime, tensorrt"
    assert d["rig_file"]["type"] == ParameterType.PARAMETER_STRING and d["rig_file"]["fp"] == []
    # The lifecycle flavour keeps parameters writable while unconfigured; the plain node's are read-only.
    assert not slop["read_only"] and lifecycle_run["plain_read_only"]
    assert lifecycle_run["slop"] == 1.0


def test_main_splits_the_lifecycle_flag_and_checks_parameter_files(tmp_path):
    from mv4d_ros.perception_node import check_ros_arguments

    good = tmp_path / "p.yaml"
    good.write_text("/**:\n  ros__parameters:\n    use_lidar: true\n")
    assert check_ros_arguments([sys.argv[0], "--ros-args", "--params-file", str(good)]) is None
    assert "does not exist" in check_ros_arguments(["x", "--ros-args", "--params-file", str(tmp_path / "no.yaml")])
    assert check_ros_arguments(["x", "--ros-args", "-p", "a:=1", "-r", "__node:=n"]) is None
    assert "is not from:=to" in check_ros_arguments(["x", "--ros-args", "-r", "__node"])
    assert check_ros_arguments(["x", "--params-file", "not/a/ros/arg"]) is None      # not inside --ros-args
