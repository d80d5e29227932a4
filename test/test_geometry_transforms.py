"""SE(3) and quaternion conventions: [w,x,y,z] inside mv4d, [x,y,z,w] in ROS messages."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mv4d_core.geometry.transforms import (
    invert_transform,
    make_transform,
    quat_to_rotmat,
    quat_wxyz_to_xyzw,
    quat_xyzw_to_wxyz,
    rotation_angle,
    rotmat_to_quat,
    transform_from_quat,
    transform_points,
    transform_to_quat,
    yaw_transform,
)

finite = st.floats(-1.0, 1.0, allow_nan=False, width=64)
quats = arrays(np.float64, (4,), elements=finite).filter(lambda q: np.linalg.norm(q) > 0.1)
vec3 = arrays(np.float64, (3,), elements=st.floats(-100, 100, allow_nan=False, width=64))


def test_quaternion_convention_is_scalar_first():
    # 90 degrees about +z: [w, x, y, z] = [cos45, 0, 0, sin45]; maps +x to +y.
    q = np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    R = quat_to_rotmat(q)
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_ros_order_conversion_both_ways():
    q_wxyz = np.array([0.1, 0.2, 0.3, 0.4])
    q_xyzw = quat_wxyz_to_xyzw(q_wxyz)
    np.testing.assert_array_equal(q_xyzw, [0.2, 0.3, 0.4, 0.1])
    np.testing.assert_array_equal(quat_xyzw_to_wxyz(q_xyzw), q_wxyz)


@settings(max_examples=200, deadline=None)
@given(quats)
def test_quaternion_matrix_round_trip(q):
    q = q / np.linalg.norm(q)
    R = quat_to_rotmat(q)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-10)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-10)
    q2 = rotmat_to_quat(R)
    assert q2[0] >= 0
    # q and -q are one rotation
    assert min(np.abs(q2 - q).max(), np.abs(q2 + q).max()) < 1e-9


@settings(max_examples=200, deadline=None)
@given(quats, vec3, arrays(np.float64, (5, 3), elements=st.floats(-50, 50, allow_nan=False, width=64)))
def test_transform_compose_inverse_is_identity(q, t, pts):
    T = transform_from_quat(q, t)
    np.testing.assert_allclose(T @ invert_transform(T), np.eye(4), atol=1e-9)
    back = transform_points(invert_transform(T), transform_points(T, pts))
    np.testing.assert_allclose(back, pts, atol=1e-8)


def test_transform_to_quat_recovers_parts():
    T = transform_from_quat(np.array([0.5, 0.5, 0.5, 0.5]), np.array([1.0, 2.0, 3.0]))
    q, t = transform_to_quat(T)
    np.testing.assert_allclose(q, [0.5, 0.5, 0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(t, [1, 2, 3])


def test_batched_and_torch_match_numpy():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(7, 4))
    t = rng.normal(size=(7, 3))
    T_np = transform_from_quat(q, t)
    T_t = transform_from_quat(torch.from_numpy(q), torch.from_numpy(t))
    assert isinstance(T_t, torch.Tensor) and T_t.shape == (7, 4, 4)
    np.testing.assert_allclose(T_t.numpy(), T_np, atol=1e-12)
    np.testing.assert_allclose(invert_transform(T_t).numpy(), invert_transform(T_np), atol=1e-12)
    pts = rng.normal(size=(7, 11, 3))
    np.testing.assert_allclose(transform_points(T_t, torch.from_numpy(pts)).numpy(), transform_points(T_np, pts), atol=1e-12)
    np.testing.assert_allclose(rotmat_to_quat(T_t[:, :3, :3]).numpy(), rotmat_to_quat(T_np[:, :3, :3]), atol=1e-12)


def test_rotmat_to_quat_is_stable_near_180_degrees():
    for axis in np.eye(3):
        angle = np.pi - 1e-9
        q = np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis])
        R = quat_to_rotmat(q)
        np.testing.assert_allclose(quat_to_rotmat(rotmat_to_quat(R)), R, atol=1e-9)
        assert rotation_angle(R) == pytest.approx(angle, abs=1e-6)


def test_zero_quaternion_is_rejected():
    with pytest.raises(ValueError, match="zero-length"):
        quat_to_rotmat(np.zeros(4))


def test_yaw_transform_moves_forward_axis():
    T = yaw_transform(np.pi / 2, (1.0, 0.0, 0.0))
    np.testing.assert_allclose(transform_points(T, np.array([[1.0, 0, 0]])), [[1.0, 1.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(make_transform(T[:3, :3], T[:3, 3]), T)
