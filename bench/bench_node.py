"""Perception node benchmark: pre/post-processing cost per 6-camera frame, and end-to-end latency.

1. ``pipeline``: 6 nuScenes-sized images (1600x900) through ``PerceptionPipeline`` with the
   tiny model (untrained weights: same cost as trained ones): pre-processing (resize + K),
   inference, post-processing, then ``output_arrays`` + ``output_messages`` (rosbags backend).
   The baseline is the model inference measured in the same run: ``ratio_to_inference`` says how
   much the plumbing adds.
2. ``node`` (needs the ros-jazzy wheels and ``unshare``): the real node in a loopback network
   namespace, 6 tiny (176x96) cameras published over DDS with ``stamp = now``; latency = receive
   time of ``~/output/occupancy`` minus its header stamp (stamp -> publish -> delivered), next to
   the node's own ``processing_time_ms``.

Usage: ``python -m bench.bench_node [--out out/bench/node.json] [--frames 5] [--no-node]``.
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

NODE_BENCH = r"""
import json, os, tempfile, time
import numpy as np, torch, rclpy
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Float64
from mv4d_core.data.synth import generate_sequence, synthetic_rig
from mv4d_core.models import ModelConfig, build_model
from mv4d_core.msgs import MsgFactory, rgb_to_image, header_stamp_ns
from mv4d_core.training.checkpoint import save_atomic
from mv4d_ros.perception_node import PerceptionNode

FRAMES = int(os.environ["BENCH_FRAMES"])
tmp = tempfile.mkdtemp(); cfg = ModelConfig.tiny(); torch.manual_seed(0)
ckpt = os.path.join(tmp, "m.pt"); save_atomic({"model_config": cfg.to_dict(), "model": build_model(cfg).state_dict()}, ckpt)
rig_file = os.path.join(tmp, "rig.yaml"); synthetic_rig("tiny").save_yaml(rig_file)
frame = generate_sequence(1, seed=1)[0]
rclpy.init()
node = PerceptionNode(parameter_overrides=[Parameter("rig_file", value=rig_file), Parameter("checkpoint", value=ckpt)])
io = rclpy.create_node("bench_io"); f = MsgFactory.rclpy()
pubs = [io.create_publisher(Image, f"/mv4d_perception/input/{c}/image", 10) for c in frame.camera_names]
lat, proc = [], []
def on_occ(m):
    lat.append((io.get_clock().now().nanoseconds - header_stamp_ns(m)) * 1e-6)
io.create_subscription(PointCloud2, "/mv4d_perception/output/occupancy", on_occ,
                       QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
io.create_subscription(Float64, "/mv4d_perception/debug/processing_time_ms", lambda m: proc.append(m.data), 10)
ex = rclpy.executors.SingleThreadedExecutor(); ex.add_node(node); ex.add_node(io)
end = time.monotonic() + 20
while time.monotonic() < end and not (all(p.get_subscription_count() for p in pubs)
                                      and node.pubs["occupancy"].get_subscription_count()):
    ex.spin_once(timeout_sec=0.02)
for k in range(FRAMES + 1):  # the first frame warms up
    stamp = io.get_clock().now().nanoseconds
    for i, p in enumerate(pubs):
        p.publish(rgb_to_image(frame.images[i], stamp, frame.camera_names[i], factory=f))
    end = time.monotonic() + 30
    while len(lat) <= k and time.monotonic() < end:
        ex.spin_once(timeout_sec=0.005)
    end = time.monotonic() + 1
    while len(proc) <= k and time.monotonic() < end:
        ex.spin_once(timeout_sec=0.005)
print(json.dumps({"latency_ms": lat[1:], "processing_ms": proc[1:]}))
ex.shutdown(); node.destroy_node(); io.destroy_node(); rclpy.shutdown()
"""


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


def bench_node(frames: int) -> dict:
    import os
    sys.path.insert(0, str(REPO / "test"))
    from netns import RosNetns, ros_available_reason

    reason = ros_available_reason()
    if reason:
        return {"skipped": reason}
    os.environ["BENCH_FRAMES"] = str(frames)
    out = RosNetns(domain_id=77).check_python(NODE_BENCH, timeout=300)
    res = json.loads(out.strip().splitlines()[-1])
    lat, proc = res["latency_ms"], res["processing_ms"]
    return {"input": "6 x 176x96 rgb8 over DDS (loopback), tiny model, only ~/output/occupancy subscribed",
            "frames": len(lat), "latency_ms_median": round(statistics.median(lat), 2),
            "latency_ms_max": round(max(lat), 2), "processing_ms_median": round(statistics.median(proc), 2),
            "ratio_latency_to_processing": round(statistics.median(lat) / statistics.median(proc), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/bench/node.json")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--no-node", action="store_true", help="skip the DDS end-to-end part")
    a = ap.parse_args()
    import os
    # Shared 2-core machines make absolute times noisy: record the load next to them.
    res = {"load_average_1min_before": round(os.getloadavg()[0], 2), "pipeline": bench_pipeline(a.frames)}
    if not a.no_node:
        res["node"] = bench_node(a.frames)
    write_result(a.out, res)


if __name__ == "__main__":
    main()
