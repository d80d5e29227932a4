"""Real DDS smoke test: an rclpy publisher and subscriber exchange a sensor_msgs/Image inside the
loopback-only network namespace (the foundation of every ROS test in this suite)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.ros

SMOKE = r"""
import json, time
import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from mv4d_core.msgs import MsgFactory, rgb_to_image, image_to_rgb, header_stamp_ns

rclpy.init()
pub_node = rclpy.create_node("smoke_pub")
sub_node = rclpy.create_node("smoke_sub")
rng = np.random.default_rng(7)
rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
received = []
sub = sub_node.create_subscription(Image, "/smoke/image", received.append, qos_profile_sensor_data)
pub = pub_node.create_publisher(Image, "/smoke/image", 10)
ex = rclpy.executors.SingleThreadedExecutor()
ex.add_node(pub_node); ex.add_node(sub_node)
factory = MsgFactory.rclpy()
deadline = time.monotonic() + 20.0
i = 0
while not received and time.monotonic() < deadline:
    if pub.get_subscription_count() > 0:
        pub.publish(rgb_to_image(rgb, 1_700_000_000_123_456_789 + i, "CAM_FRONT", factory=factory))
        i += 1
    ex.spin_once(timeout_sec=0.05)
assert received, "no Image arrived over DDS within 20 s"
msg = received[0]
out = image_to_rgb(msg)
print(json.dumps({
    "type": type(msg).__module__ + "." + type(msg).__name__,
    "frame_id": msg.header.frame_id, "encoding": msg.encoding,
    "stamp_ns": header_stamp_ns(msg), "size": [msg.width, msg.height, msg.step],
    "pixels_equal": bool(np.array_equal(out, rgb)), "published": i,
}))
ex.shutdown(); pub_node.destroy_node(); sub_node.destroy_node(); rclpy.shutdown()
"""


def test_image_round_trips_over_real_dds_in_the_namespace(ros_netns):
    out = ros_netns.check_python(SMOKE, timeout=90)
    res = json.loads(out.strip().splitlines()[-1])
    assert res["type"] == "sensor_msgs.msg._image.Image"
    assert res["frame_id"] == "CAM_FRONT" and res["encoding"] == "rgb8"
    assert res["size"] == [32, 24, 96]
    assert res["pixels_equal"] is True
    # The stamp survives exactly (ns precision through builtin_interfaces/Time).
    assert 1_700_000_000_123_456_789 <= res["stamp_ns"] < 1_700_000_000_123_456_789 + res["published"]


def test_the_namespace_has_only_loopback(ros_netns):
    # Guard for the isolation the DDS tests rely on: no interface other than lo exists inside.
    out = ros_netns.check_python("import socket; print(json.dumps(sorted(n for _, n in socket.if_nameindex())))"
                                 .replace("json.dumps", "__import__('json').dumps"), timeout=30)
    assert json.loads(out.strip()) == ["lo"]
