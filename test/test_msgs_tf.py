"""TF conversions and the small TF buffer (mv4d_core.msgs.tf)."""

from __future__ import annotations

import numpy as np
import pytest

from mv4d_core.geometry.transforms import (invert_transform, quat_to_rotmat, rotation_angle, transform_from_quat,
                                           yaw_transform)
from mv4d_core.msgs import (MsgFactory, StampedTransform, TFBuffer, TransformError, make_tf_message,
                            matrix_to_odometry, matrix_to_transform_stamped, odometry_to_matrix, tf_message_to_list,
                            transform_to_matrix)

F = MsgFactory.rosbags()


def random_T(rng) -> np.ndarray:
    q = rng.normal(size=4)
    return transform_from_quat(q / np.linalg.norm(q), rng.normal(size=3) * 5)


def test_quaternion_is_xyzw_on_the_wire():
    # 90 degrees about +z: ROS (x, y, z, w) = (0, 0, sin45, cos45)
    msg = F.transform_stamped(F.header(0, "base_link"), "cam", [1, 2, 3], [0, 0, np.sqrt(0.5), np.sqrt(0.5)])
    T = transform_to_matrix(msg)
    np.testing.assert_allclose(T[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])
    back = matrix_to_transform_stamped(T, "base_link", "cam", 5, factory=F)
    r = back.transform.rotation
    np.testing.assert_allclose([r.x, r.y, r.z, r.w], [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-12)
    assert back.header.frame_id == "base_link" and back.child_frame_id == "cam"


def test_random_transforms_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        T = random_T(rng)
        np.testing.assert_allclose(transform_to_matrix(matrix_to_transform_stamped(T, "a", "b", factory=F)), T, atol=1e-12)


def test_tf_message_list_and_odometry():
    rng = np.random.default_rng(1)
    items = [StampedTransform("map", "base_link", 10, random_T(rng)), StampedTransform("base_link", "cam", 10, random_T(rng))]
    back = tf_message_to_list(make_tf_message(items, factory=F))
    assert [(t.parent, t.child, t.stamp_ns) for t in back] == [("map", "base_link", 10), ("base_link", "cam", 10)]
    for a, b in zip(items, back):
        np.testing.assert_allclose(a.T, b.T, atol=1e-12)
    T = random_T(rng)
    o = odometry_to_matrix(matrix_to_odometry(T, "odom", "base_link", 77, factory=F))
    assert (o.parent, o.child, o.stamp_ns) == ("odom", "base_link", 77)
    np.testing.assert_allclose(o.T, T, atol=1e-12)


def test_malformed_transforms_raise():
    msg = F.transform_stamped(F.header(0, "a"), "b", [0, 0, 0], [0, 0, 0, 0])
    with pytest.raises(TransformError, match="'a' <- 'b'.*zero-length"):
        transform_to_matrix(msg)
    msg = F.transform_stamped(F.header(0, "a"), "b", [np.nan, 0, 0], [0, 0, 0, 1])
    with pytest.raises(TransformError, match="non-finite"):
        transform_to_matrix(msg)


def test_buffer_chains_static_and_dynamic_transforms():
    rng = np.random.default_rng(2)
    T_base_lidar, T_lidar_cam = random_T(rng), random_T(rng)
    buf = TFBuffer()
    buf.set_static("base_link", "lidar", T_base_lidar)
    buf.set_static("lidar", "cam", T_lidar_cam)
    T_map_base = [yaw_transform(0.0, (0, 0, 0)), yaw_transform(0.2, (2, 0, 0))]
    buf.set_transform("map", "base_link", 100, T_map_base[0])
    buf.set_transform("map", "base_link", 200, T_map_base[1])
    np.testing.assert_allclose(buf.lookup("base_link", "cam"), T_base_lidar @ T_lidar_cam, atol=1e-12)
    np.testing.assert_allclose(buf.lookup("cam", "base_link"), invert_transform(T_base_lidar @ T_lidar_cam), atol=1e-12)
    np.testing.assert_allclose(buf.lookup("map", "cam", 200), T_map_base[1] @ T_base_lidar @ T_lidar_cam, atol=1e-12)
    mid = buf.lookup("map", "base_link", 150)  # halfway: yaw 0.1, x = 1
    np.testing.assert_allclose(mid, yaw_transform(0.1, (1, 0, 0)), atol=1e-12)
    np.testing.assert_allclose(buf.lookup("map", "base_link"), T_map_base[1])  # latest


def test_buffer_errors_name_frames_and_range():
    buf = TFBuffer()
    buf.set_transform("map", "base_link", 100, np.eye(4))
    buf.set_transform("map", "base_link", 200, np.eye(4))
    with pytest.raises(TransformError, match="'map' <- 'base_link'.*outside the buffered range"):
        buf.lookup("map", "base_link", 250)
    assert TFBuffer(extrapolation_tolerance_ns=60).can_transform("map", "map")
    tol = TFBuffer(extrapolation_tolerance_ns=60)
    tol.set_transform("map", "base_link", 100, np.eye(4))
    assert tol.can_transform("map", "base_link", 150) and not tol.can_transform("map", "base_link", 161)
    with pytest.raises(TransformError, match="no TF path from 'cam' to 'map'"):
        buf.lookup("map", "cam")
    with pytest.raises(TransformError, match="already has parent"):
        buf.set_static("odom", "base_link", np.eye(4))


def test_out_of_order_and_duplicate_samples():
    buf = TFBuffer()
    for stamp, x in [(300, 3.0), (100, 1.0), (200, 2.0), (200, 2.5)]:  # 200 is overwritten
        buf.set_transform("map", "base_link", stamp, yaw_transform(0, (x, 0, 0)))
    assert buf.lookup("map", "base_link", 200)[0, 3] == 2.5
    assert buf.lookup("map", "base_link", 250)[0, 3] == pytest.approx(2.75)


def test_slerp_takes_the_short_way():
    buf = TFBuffer()
    buf.set_transform("map", "b", 0, yaw_transform(np.deg2rad(170)))
    buf.set_transform("map", "b", 10, yaw_transform(np.deg2rad(-170)))
    R = buf.lookup("map", "b", 5)[:3, :3]
    assert np.rad2deg(rotation_angle(R)) == pytest.approx(180, abs=1e-6)
    np.testing.assert_allclose(R, quat_to_rotmat(np.array([0, 0, 0, 1.0])), atol=1e-9)
