"""PoseBuffer: odometry poses looked up at a camera set's stamp, extrapolated (bounded) past the newest
sample, and its bounded wait (pure Python, no ROS)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mv4d_core.geometry.transforms import make_transform, yaw_transform
from mv4d_core.msgs import MsgFactory
from mv4d_core.msgs.errors import TransformError
from mv4d_core.msgs.tf import matrix_to_odometry
from mv4d_ros.pose_buffer import PoseBuffer

MS = 1_000_000
S = 1_000_000_000


def at_x(x_m: float, yaw_rad: float = 0.0) -> np.ndarray:
    T = yaw_transform(yaw_rad)
    T[0, 3] = x_m
    return T


def test_exact_stamp_returns_that_pose():
    buf = PoseBuffer(tolerance_ns=50 * MS)
    buf.add(1 * S, at_x(1.0), "odom")
    buf.add(1 * S + 100 * MS, at_x(2.0), "odom")
    found = buf.lookup(1 * S + 100 * MS)
    assert found is not None and found.nearest_ns == 0
    np.testing.assert_allclose(found.T_world_base, at_x(2.0))


def test_between_samples_translation_and_yaw_are_interpolated():
    buf = PoseBuffer(tolerance_ns=50 * MS)
    buf.add(1 * S, at_x(0.0, 0.0), "odom")
    buf.add(1 * S + 40 * MS, at_x(4.0, 0.4), "odom")
    found = buf.lookup(1 * S + 10 * MS)                     # a quarter of the way
    assert found is not None and found.nearest_ns == 10 * MS
    np.testing.assert_allclose(found.T_world_base, at_x(1.0, 0.1), atol=1e-9)


def test_stamp_farther_than_the_tolerance_from_every_sample_has_no_pose():
    buf = PoseBuffer(tolerance_ns=50 * MS)
    assert buf.lookup(1 * S) is None                        # nothing received yet
    buf.add(1 * S, at_x(0.0), "odom")
    buf.add(2 * S, at_x(10.0), "odom")
    # Bracketed, but both samples are 0.5 s away: a 1 s gap in odometry is not interpolated across.
    assert buf.lookup(1 * S + 500 * MS) is None
    assert buf.lookup(2 * S + 51 * MS) is None              # too new (odometry lags)
    assert buf.lookup(1 * S - 51 * MS) is None              # older than the buffer
    # Just past the newest sample, within tolerance: that sample is held.
    found = buf.lookup(2 * S + 30 * MS)
    assert found is not None and found.nearest_ns == 30 * MS
    np.testing.assert_allclose(found.T_world_base, at_x(10.0))


def test_old_samples_are_forgotten_by_age_and_count():
    buf = PoseBuffer(tolerance_ns=50 * MS, horizon_ns=1 * S, max_samples=5)
    for i in range(30):
        buf.add(i * 100 * MS, at_x(float(i)), "odom")
    assert len(buf) == 5 and buf.newest_ns == 2900 * MS
    assert buf.lookup(0) is None
    buf2 = PoseBuffer(tolerance_ns=50 * MS, horizon_ns=1 * S)
    for i in range(30):
        buf2.add(i * 100 * MS, at_x(float(i)), "odom")
    assert len(buf2) == 11                                  # 1.9 s .. 2.9 s


def test_stamps_going_back_or_a_new_world_frame_restart_the_buffer():
    buf = PoseBuffer(tolerance_ns=50 * MS)
    buf.add(5 * S, at_x(5.0), "odom")
    buf.add(6 * S, at_x(6.0), "odom")
    buf.add(1 * S, at_x(1.0), "odom")                       # bag looped
    assert len(buf) == 1 and buf.clears == 1 and buf.lookup(6 * S) is None
    buf.add(1 * S + 10 * MS, at_x(100.0), "map")             # re-initialised in another frame
    assert len(buf) == 1 and buf.clears == 2 and buf.world_frame == "map"
    assert buf.lookup(1 * S) is not None                     # the map-frame sample, held within tolerance
    np.testing.assert_allclose(buf.lookup(1 * S).T_world_base, at_x(100.0))


def test_odometry_messages_of_both_message_flavours_are_read():
    T = make_transform(yaw_transform(0.3)[:3, :3], np.array([1.0, -2.0, 0.5]))
    for factory in (MsgFactory.rosbags(), MsgFactory.rclpy()):
        buf = PoseBuffer(tolerance_ns=10 * MS)
        buf.add_odometry(matrix_to_odometry(T, "odom", "base_link", 7 * S, factory=factory))
        assert buf.world_frame == "odom"
        np.testing.assert_allclose(buf.lookup(7 * S).T_world_base, T, atol=1e-9)


def test_non_finite_odometry_is_refused_naming_the_message():
    msg = matrix_to_odometry(np.eye(4), "odom", "base_link", 1 * S, factory=MsgFactory.rosbags())
    msg.pose.pose.position.x = float("nan")
    buf = PoseBuffer(tolerance_ns=10 * MS)
    with pytest.raises(TransformError, match="Odometry"):
        buf.add_odometry(msg)
    assert len(buf) == 0


def test_tolerance_must_be_positive():
    with pytest.raises(ValueError, match="tolerance_ns"):
        PoseBuffer(tolerance_ns=0)


def test_past_the_newest_sample_the_pose_is_extrapolated_at_most_the_tolerance():
    buf = PoseBuffer(tolerance_ns=50 * MS)
    buf.add(1 * S, at_x(0.0, 0.0), "odom")
    buf.add(1 * S + 20 * MS, at_x(0.2, 0.02), "odom")          # 10 m/s, 1 rad/s
    found = buf.lookup(1 * S + 50 * MS)                         # 30 ms past the newest sample
    assert found is not None and found.how == "extrapolated" and found.nearest_ns == 30 * MS
    # (for small angles the slerp is a normalised lerp: 5e-6 off the exact rotation at 0.05 rad)
    np.testing.assert_allclose(found.T_world_base, at_x(0.5, 0.05), atol=2e-5)
    assert buf.lookup(1 * S + 71 * MS) is None                  # 51 ms past: further than the tolerance
    assert buf.lookup(1 * S + 10 * MS).how == "interpolated"
    assert buf.lookup(1 * S - 10 * MS).how == "held"            # before the oldest: never extrapolated back


def test_no_velocity_from_samples_too_far_apart_to_interpolate():
    buf = PoseBuffer(tolerance_ns=50 * MS)
    buf.add(1 * S, at_x(0.0), "odom")
    buf.add(1 * S + 200 * MS, at_x(2.0), "odom")                # 200 ms apart > 2 x tolerance
    found = buf.lookup(1 * S + 230 * MS)
    assert found.how == "held"
    np.testing.assert_allclose(found.T_world_base, at_x(2.0))


def test_wait_for_returns_when_the_covering_sample_arrives_or_times_out():
    buf = PoseBuffer(tolerance_ns=50 * MS)
    buf.add(1 * S, at_x(0.0), "odom")
    t0 = time.monotonic()
    assert not buf.wait_for(2 * S, 0.1)
    assert 0.09 <= time.monotonic() - t0 < 1.0
    threading.Timer(0.05, lambda: buf.add(2 * S + 5 * MS, at_x(1.0), "odom")).start()
    t0 = time.monotonic()
    assert buf.wait_for(2 * S, 5.0)
    assert time.monotonic() - t0 < 2.0
    assert buf.wait_for(1 * S, 0.0)                             # already covered: no wait
