"""Perception node benchmark: pre/post-processing cost per 6-camera frame, and the node end to end.

1. ``pipeline``: 6 nuScenes-sized images (1600x900) through ``PerceptionPipeline`` with the
   tiny model (untrained weights: same cost as trained ones): pre-processing (resize + K),
   inference, post-processing, then ``output_arrays`` + ``output_messages`` (rosbags backend).
   The baseline is the model inference measured in the same run: ``ratio_to_inference`` says how
   much the plumbing adds.
2. ``node`` (needs the ros-jazzy wheels and ``unshare``): the real node as its own process
   (``python -m mv4d_ros.perception_node``, single-threaded executor, newest-set worker), tiny model,
   fed by a second process like a camera driver: 6 x 1600x900 ``rgb8`` or JPEG at 10 Hz for
   ``--seconds`` (``stamp = now``, publisher RELIABLE keep-last 10), over DDS in a loopback network
   namespace, once per input QoS. Latency = receive time of ``~/output/occupancy`` minus its header
   stamp (stamp -> processed -> published -> delivered), next to the node's own processing time
   (``~/debug/processing_time_ms``); growth = median of the last third minus the first third.
   Frames lost = sets published minus sets the node completed (its ``/diagnostics``), with the
   messages DDS reported lost (``message_lost``) and those each input missed.

3. ``transport`` (``--transport``): DDS alone, no node: the same driver process publishing to a
   subscriber process whose callbacks only record, per Fast DDS transport
   (``FASTDDS_BUILTIN_TRANSPORTS``: default = shared memory + UDPv4, ``UDPv4``, ``SHM``,
   ``LARGE_DATA``) and subscription QoS: messages received, complete six-camera sets and the
   ``message_lost`` count.

Usage: ``python -m bench.bench_node [--out out/bench/node.json] [--seconds 60]
[--qos SENSOR_DATA,RELIABLE_1,RELIABLE_5] [--modes raw,jpeg] [--no-node] [--transport]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import write_result

REPO = Path(__file__).resolve().parents[1]

# Runs inside the namespace: starts the node process, publishes, listens, prints one JSON line.
NODE_BENCH = r"""
import json, os, subprocess, sys, tempfile, threading, time
import numpy as np, torch, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from std_msgs.msg import Float64
from mv4d_core.data.synth import generate_sequence, synthetic_rig
from mv4d_core.models import ModelConfig, build_model
from mv4d_core.msgs import MsgFactory, header_stamp_ns, rgb_to_compressed, rgb_to_image
from mv4d_core.training.checkpoint import save_atomic

MODE, QOS, SECONDS = os.environ["BENCH_MODE"], os.environ["BENCH_QOS"], float(os.environ["BENCH_SECONDS"])
W, H, HZ = 1600, 900, 10.0
tmp = tempfile.mkdtemp(); cfg = ModelConfig.tiny(); torch.manual_seed(0)
ckpt = os.path.join(tmp, "m.pt")
save_atomic({"model_config": cfg.to_dict(), "model": build_model(cfg).state_dict()}, ckpt)
rig = synthetic_rig("tiny").resized(W, H); rig_file = os.path.join(tmp, "rig.yaml"); rig.save_yaml(rig_file)
frame = generate_sequence(1, seed=1)[0]
CAMS = list(frame.camera_names)
node = subprocess.Popen([sys.executable, "-m", "mv4d_ros.perception_node", "--ros-args", "-p", "rig_file:=" + rig_file,
                         "-p", "checkpoint:=" + ckpt, "-p", "input_qos:=" + QOS, "-p", "publish.depth:=false",
                         "-p", "image_transport:=" + ("compressed" if MODE == "jpeg" else "raw"),
                         "-p", "diagnostics_period_s:=1.0", "-p", "diagnostics_window_s:=5.0"],
                        stderr=subprocess.PIPE, text=True,
                        env={**os.environ, **({"OMP_NUM_THREADS": os.environ["BENCH_NODE_THREADS"]}
                                              if os.environ.get("BENCH_NODE_THREADS") else {})})
rclpy.init()
io = rclpy.create_node("bench_driver"); f = MsgFactory.rclpy()
import cv2
big = [cv2.resize(np.ascontiguousarray(frame.images[i]), (W, H), interpolation=cv2.INTER_LINEAR) for i in range(6)]
T = CompressedImage if MODE == "jpeg" else Image
pubs = [io.create_publisher(T, f"/mv4d_perception/input/{c}/image",
                            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)) for c in CAMS]
msgs = [rgb_to_compressed(big[i], 0, c, factory=f, format="jpeg") if MODE == "jpeg"
        else rgb_to_image(big[i], 0, c, factory=f) for i, c in enumerate(CAMS)]
lat, proc, diag, lock = [], [], [], threading.Lock()
ages, waits = [], []
def on_diag(a):
    diag.append(a)
    for s in a.status:
        if s.name == "mv4d_perception: perception":
            v = {kv.key: kv.value for kv in s.values}
            ages.append(float(v.get("last_set_arrival_age_ms", "nan")))
            waits.append(float(v.get("last_wait_ms", "nan")))
def on_occ(m):
    with lock:
        lat.append((time.monotonic(), (io.get_clock().now().nanoseconds - header_stamp_ns(m)) * 1e-6))
io.create_subscription(PointCloud2, "/mv4d_perception/output/occupancy", on_occ,
                       QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
io.create_subscription(Float64, "/mv4d_perception/debug/processing_time_ms", lambda m: proc.append(m.data), 10)
node_lat = []
io.create_subscription(Float64, "/mv4d_perception/debug/pipeline_latency_ms", lambda m: node_lat.append(m.data), 10)
io.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
ex = rclpy.executors.SingleThreadedExecutor(); ex.add_node(io)
threading.Thread(target=ex.spin, daemon=True).start()
end = time.monotonic() + 120
while time.monotonic() < end and not (all(p.get_subscription_count() for p in pubs)
                                      and io.count_publishers("/mv4d_perception/output/occupancy")):
    time.sleep(0.1)
time.sleep(2.0)
sent, late_ticks = 0, 0
t0 = time.monotonic()
while time.monotonic() - t0 < SECONDS:
    target = t0 + sent / HZ
    d = target - time.monotonic()
    if d > 0:
        time.sleep(d)
    else:
        late_ticks += 1
    st = f.time(io.get_clock().now().nanoseconds)
    for m, p in zip(msgs, pubs):
        m.header.stamp = st
        p.publish(m)
    sent += 1
wall = time.monotonic() - t0
time.sleep(3.0)
def status(name):
    for a in reversed(diag):
        for s in a.status:
            if s.name == "mv4d_perception: " + name:
                return {kv.key: kv.value for kv in s.values}
    return {}
node_status = status("perception")
inputs = {c: status("input " + c) for c in CAMS}
node.terminate()
try:
    _, err = node.communicate(timeout=30)
except subprocess.TimeoutExpired:
    node.kill(); _, err = node.communicate()
with lock:
    tl = [(t - t0, ms) for t, ms in lat]
print(json.dumps({"sent": sent, "wall_s": wall, "publisher_late_ticks": late_ticks,
                  "bytes_per_image": len(msgs[0].data),
                  "latency": tl, "processing_ms": proc, "node_latency_ms": node_lat, "node": node_status,
                  "set_arrival_age_ms": ages, "worker_wait_ms": waits,
                  "inputs": inputs,
                  "node_stderr_tail": err[-1500:]}))
ex.shutdown(); io.destroy_node(); rclpy.shutdown()
"""


# Transport only: a publisher process and a recording subscriber process (argv: mode seconds / mode qos seconds).
TRANSPORT_PUB = r"""
import json, sys, time
import cv2, numpy as np, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
mode, seconds = sys.argv[1], float(sys.argv[2])
W, H = 1600, 900
rclpy.init()
n = rclpy.create_node("camera_driver")
q = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:H, 0:W]
img = np.stack([xx * 255 // W, yy * 255 // H, (xx + yy) % 256], -1).astype(np.uint8)
img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
msgs, pubs = [], []
for i in range(6):
    if mode == "raw":
        m = Image(height=H, width=W, encoding="rgb8", step=W * 3, is_bigendian=0); m.data = img.tobytes()
    else:
        m = CompressedImage(format="jpeg")
        m.data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    msgs.append(m); pubs.append(n.create_publisher(type(m), f"/CAM{i}/image", q))
end = time.monotonic() + 30
while time.monotonic() < end and not all(p.get_subscription_count() for p in pubs):
    time.sleep(0.05)
time.sleep(1.0)
sent, t0 = 0, time.monotonic()
while time.monotonic() - t0 < seconds:
    d = t0 + sent / 10.0 - time.monotonic()
    if d > 0:
        time.sleep(d)
    st = n.get_clock().now().to_msg()
    for m, p in zip(msgs, pubs):
        m.header.stamp = st; p.publish(m)
    sent += 1
print(json.dumps({"sent": sent, "bytes_per_image": len(msgs[0].data)}), flush=True)
time.sleep(2.0)
n.destroy_node(); rclpy.shutdown()
"""

TRANSPORT_SUB = r"""
import json, sys, time
import rclpy
from rclpy.event_handler import SubscriptionEventCallbacks
from sensor_msgs.msg import CompressedImage, Image
from mv4d_ros.qos import qos_from_string
mode, qos, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
rclpy.init()
n = rclpy.create_node("recorder")
recv = {i: [] for i in range(6)}; lost = {i: 0 for i in range(6)}
def on_msg(i):
    def f(m):
        recv[i].append((m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, n.get_clock().now().nanoseconds))
    return f
def on_lost(i):
    def f(info):
        lost[i] += info.total_count_change
    return f
T = Image if mode == "raw" else CompressedImage
subs = [n.create_subscription(T, f"/CAM{i}/image", on_msg(i), qos_from_string(qos),
                              event_callbacks=SubscriptionEventCallbacks(message_lost=on_lost(i))) for i in range(6)]
ex = rclpy.executors.SingleThreadedExecutor(); ex.add_node(n)
end = time.monotonic() + seconds
while time.monotonic() < end:
    ex.spin_once(timeout_sec=0.05)
complete = set.intersection(*({s for s, _ in v} for v in recv.values()))
lat = sorted((r - s) / 1e6 for v in recv.values() for s, r in v)
print(json.dumps({"received": sum(len(v) for v in recv.values()), "complete_sets": len(complete),
                  "message_lost": sum(lost.values()),
                  "latency_ms_median": lat[len(lat) // 2] if lat else None,
                  "latency_ms_p90": lat[int(0.9 * len(lat))] if lat else None}), flush=True)
n.destroy_node(); rclpy.shutdown()
"""

TRANSPORT_DRIVER = r"""
import json, os, subprocess, sys, time
mode, qos, transport, seconds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
env = dict(os.environ)
if transport != "default":
    env["FASTDDS_BUILTIN_TRANSPORTS"] = transport
sub = subprocess.Popen([sys.executable, "-c", os.environ["BENCH_SUB"], mode, qos, str(float(seconds) + 10)], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
time.sleep(1.0)
pub = subprocess.run([sys.executable, "-c", os.environ["BENCH_PUB"], mode, seconds], env=env, capture_output=True,
                     text=True)
so, se = sub.communicate(timeout=300)
try:
    print(json.dumps({**json.loads(pub.stdout.strip().splitlines()[-1]), **json.loads(so.strip().splitlines()[-1])}))
except (IndexError, ValueError):
    print(json.dumps({"failed": (pub.stderr + se)[-800:]}))
"""


def bench_transport(mode: str, qos: str, transport: str, seconds: float) -> dict:
    import os
    sys.path.insert(0, str(REPO / "test"))
    from netns import RosNetns, ros_available_reason

    reason = ros_available_reason()
    if reason:
        return {"skipped": reason}
    os.environ.update(BENCH_PUB=TRANSPORT_PUB, BENCH_SUB=TRANSPORT_SUB)
    out = RosNetns(domain_id=78).check_python(TRANSPORT_DRIVER, timeout=seconds + 300,
                                              args=[mode, qos, transport, str(seconds)])
    return json.loads(out.strip().splitlines()[-1])


def bench_pipeline(frames: int) -> dict:
    from mv4d_core.data.frame import FrameRecord
    from mv4d_core.data.synth import synthetic_rig
    from mv4d_core.models import ModelConfig
    from mv4d_core.msgs import MsgFactory
    from mv4d_core.pipeline.config import PerceptionConfig
    from mv4d_core.engines.torch_engine import TorchEngine
    from mv4d_core.pipeline.messages import output_messages
    from mv4d_core.pipeline.pipeline import PerceptionPipeline, output_arrays

    rig = synthetic_rig("tiny")
    rng = np.random.default_rng(0)
    W, H = 1600, 900
    images = rng.integers(0, 256, (6, H, W, 3), dtype=np.uint8)
    Ks = np.stack([c.camera.resized(W, H).K for c in rig.cameras])
    cfg = PerceptionConfig(camera_names=tuple(rig.camera_names))
    pipe = PerceptionPipeline(TorchEngine.from_model_config(ModelConfig.tiny()), cfg, temporal=False)  # as the node
    factory = MsgFactory.rosbags()
    rows = []
    for k in range(frames + 1):
        frame = FrameRecord(1_000_000_000 + k * 100_000_000, rig.camera_names, images, Ks, rig.extrinsics())
        out = pipe.process(frame)
        t0 = time.perf_counter()
        arrays = output_arrays(out, cfg)
        meta = [(c, frame.stamp_ns) for c in rig.camera_names]
        msgs = output_messages(arrays, out, frame.stamp_ns, "base_link", meta, factory)
        to_msgs_ms = (time.perf_counter() - t0) * 1e3
        if k:  # the first frame warms up
            t = pipe.timings
            rows.append((t.preprocess_ms, t.inference_ms, t.postprocess_ms, to_msgs_ms))
    pre, inf, post, to_msgs = (statistics.median(c) for c in zip(*rows))
    return {
        "input": f"6 x {W}x{H} rgb8 -> tiny model 176x96, grid 100x100x8", "frames": frames,
        "preprocess_ms": round(pre, 2), "inference_ms": round(inf, 2), "postprocess_ms": round(post, 2),
        "to_messages_ms": round(to_msgs, 2), "output_messages": len(msgs),
        "ratio_to_inference": round((pre + post + to_msgs) / inf, 3),
    }


def _median(values) -> float | None:
    values = [v for v in values or [] if v == v]      # NaN before the first set
    return round(statistics.median(values), 1) if values else None


def _summary(raw: dict) -> dict:
    lat = [ms for _, ms in raw["latency"]]
    proc = raw["processing_ms"][1:] or raw["processing_ms"]
    node, inputs = raw["node"], raw["inputs"]
    out = {"sets_published": raw["sent"], "publish_rate_hz": round(raw["sent"] / raw["wall_s"], 2),
           "bytes_per_image": raw["bytes_per_image"]}
    if not lat or not node:
        out["failed"] = raw.get("node_stderr_tail", "")[-600:]
        return out
    third = max(1, len(lat) // 3)
    complete = int(node.get("sets_complete", 0))
    received = {c: int(v.get("received", 0)) for c, v in inputs.items()}
    out.update({
        "latency_ms_median": round(statistics.median(lat), 1),
        "latency_ms_p90": round(float(np.percentile(lat, 90)), 1),
        "latency_ms_max": round(max(lat), 1),
        "processing_ms_median": round(statistics.median(proc), 1),
        "ratio_latency_to_processing": round(statistics.median(lat) / statistics.median(proc), 3),
        # stamp -> published, measured in the node (the rest of latency_ms is delivery to the listener)
        "node_latency_ms_median": _median(raw["node_latency_ms"]),
        # ... of which: stamp -> the set's last message in the node's callback, and the wait for the worker
        # (sampled once per diagnostics period)
        "set_arrival_age_ms_median": _median(raw.get("set_arrival_age_ms")),
        "worker_wait_ms_median": _median(raw.get("worker_wait_ms")),
        "latency_growth_ms": round(statistics.median(lat[-third:]) - statistics.median(lat[:third]), 1),
        "sets_complete": complete,
        "frames_lost": raw["sent"] - complete,
        "frames_processed": int(node.get("frames_processed", 0)),
        "superseded": int(node.get("superseded", 0)),
        "images_missed": raw["sent"] * len(received) - sum(received.values()),
        "dds_message_lost": int(node.get("drop_message_lost", 0)),
    })
    return out


def bench_node(mode: str, qos: str, seconds: float) -> dict:
    import os
    sys.path.insert(0, str(REPO / "test"))
    from netns import RosNetns, ros_available_reason

    reason = ros_available_reason()
    if reason:
        return {"skipped": reason}
    os.environ.update(BENCH_MODE=mode, BENCH_QOS=qos, BENCH_SECONDS=str(seconds))
    out = RosNetns(domain_id=77).check_python(NODE_BENCH, timeout=seconds + 300)
    return _summary(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/bench/node.json")
    ap.add_argument("--frames", type=int, default=5, help="frames of the pipeline part")
    ap.add_argument("--seconds", type=float, default=60.0, help="input duration of each node run")
    ap.add_argument("--qos", default="SENSOR_DATA,RELIABLE_1,RELIABLE_5", help="input_qos values to compare")
    ap.add_argument("--modes", default="raw,jpeg", help="raw and/or jpeg")
    ap.add_argument("--no-node", action="store_true", help="skip the DDS end-to-end part")
    ap.add_argument("--transport", action="store_true",
                    help="also DDS alone (no node) per Fast DDS transport and subscription QoS")
    ap.add_argument("--transport-seconds", type=float, default=10.0)
    a = ap.parse_args()
    import os
    # Shared 2-core machines make absolute times noisy: record the load next to them.
    res = {"load_average_1min_before": round(os.getloadavg()[0], 2), "pipeline": bench_pipeline(a.frames)}
    if not a.no_node:
        res["node"] = {"input": f"6 x 1600x900 at 10 Hz for {a.seconds:g} s over DDS (loopback), tiny model, "
                                "node and camera driver in separate processes"}
        for mode in a.modes.split(","):
            for qos in a.qos.split(","):
                t0 = time.perf_counter()
                res["node"][f"{mode}_{qos}"] = bench_node(mode, qos, a.seconds)
                print(f"[bench_node] {mode} {qos}: {res['node'][f'{mode}_{qos}']} ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
        res["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    if a.transport:
        res["transport"] = {"input": f"6 x 1600x900 at 10 Hz for {a.transport_seconds:g} s, publisher RELIABLE "
                                     "keep-last 10, a recording subscriber process"}
        for mode in a.modes.split(","):
            for transport in ("default", "UDPv4", "SHM", "LARGE_DATA"):
                for qos in ("SENSOR_DATA", "RELIABLE_1", "RELIABLE_5"):
                    r = bench_transport(mode, qos, transport, a.transport_seconds)
                    res["transport"][f"{mode}_{transport}_{qos}"] = r
                    print(f"[bench_node] transport {mode} {transport} {qos}: {r}", flush=True)
    write_result(a.out, res)


if __name__ == "__main__":
    main()
