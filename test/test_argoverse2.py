"""Argoverse 2 sample: sweeps in the ego frame, poses, and scene-flow labels in mv4d's convention."""

import numpy as np
import pytest

from mv4d_core.data.argoverse2 import Av2Error, Av2Log, find_logs, object_flow
from mv4d_core.geometry.transforms import invert_transform, transform_points

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def log(shared_data):
    logs = find_logs(shared_data / "argoverse2_av2api")
    assert len(logs) == 1
    return Av2Log(logs[0])


def test_two_sweeps_with_poses(log):
    assert len(log.lidar_stamps) == 2
    t0, t1 = log.lidar_stamps
    assert 0.09 < (t1 - t0) * 1e-9 < 0.11
    s = log.sweep(t0)
    assert s.xyz.shape == (99229, 3) and s.xyz.dtype == np.float32
    assert np.all(np.isfinite(s.xyz)) and 0 <= s.intensity.min() and s.intensity.max() <= 255
    # AV2's ego frame sits at the rear axle: the road is about a wheel radius below its origin.
    is_ground = log.flow_labels().is_ground
    assert -0.6 < np.median(s.xyz[is_ground, 2]) < -0.15
    assert np.median(s.xyz[~is_ground, 2]) > np.median(s.xyz[is_ground, 2]) + 0.5
    for t in (t0, t1):
        R = log.T_city_ego(t)[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    speed = np.linalg.norm(log.T_city_ego(t1)[:3, 3] - log.T_city_ego(t0)[:3, 3]) / ((t1 - t0) * 1e-9)
    assert 0 <= speed < 20
    with pytest.raises(Av2Error, match="no ego pose"):
        log.T_city_ego(t0 + 1)


def test_flow_labels_match_the_stored_ego_motion(log, shared_data):
    labels = log.flow_labels()
    stored = np.load(log.log_dir / "ego_motion.npz")["ego_motion"][0]
    np.testing.assert_allclose(labels.T_ego1_ego0, stored, atol=2e-3)
    assert labels.flow_m.shape == (99229, 3) and labels.dynamic.any() and not labels.dynamic.all()


def test_object_flow_is_zero_on_static_points_and_moves_dynamic_ones(log):
    f = log.frame(log.lidar_stamps[0])
    assert f.num_cameras == 0 and f.gt is not None and f.gt.point_flow_includes_ego is False
    labels = log.flow_labels()
    flow = f.gt.point_flow_m
    static_err = np.linalg.norm(flow[~labels.dynamic], axis=1)
    assert np.median(static_err) < 0.01 and np.percentile(static_err, 99) < 0.06
    dyn_speed = np.linalg.norm(flow[labels.dynamic], axis=1) / 0.1
    assert np.median(dyn_speed) > 1.0
    # Undoing the convention change reproduces AV2's own labels (in AV2's ego frame).
    T = labels.T_ego1_ego0
    p0 = log.sweep(log.lidar_stamps[0]).xyz.astype(np.float64)
    back = transform_points(T, p0 + flow) - p0
    np.testing.assert_allclose(back, labels.flow_m, atol=1e-4)


def test_frames_are_in_base_link_on_the_road(log):
    # base_link = AV2's ego frame moved down onto the road (height from the log's ground-height map)
    assert 0.2 < log.axle_height_m < 0.45
    t0, t1 = log.lidar_stamps
    f0, f1 = log.frame(t0), log.frame(t1, with_flow=False)
    is_ground = log.flow_labels().is_ground
    near = np.linalg.norm(f0.lidar_xyz[:, :2], axis=1) < 20
    # the road within 20 m is flat to a few cm on this log; 0.1 m leaves room for its camber
    assert abs(np.median(f0.lidar_xyz[is_ground & near, 2])) < 0.1
    np.testing.assert_allclose(f0.lidar_xyz - log.sweep(t0).xyz, np.tile([0, 0, log.axle_height_m], (len(f0.lidar_xyz), 1)),
                               atol=1e-5)
    # the same world point: a base_link pose is the ego pose with the ego -> base_link shift
    np.testing.assert_allclose(f1.T_world_base, log.T_city_ego(t1) @ log.T_ego_base, atol=1e-9)
    np.testing.assert_allclose(transform_points(f0.T_world_base, f0.lidar_xyz[:5].astype(np.float64)),
                               transform_points(log.T_city_ego(t0), log.sweep(t0).xyz[:5].astype(np.float64)), atol=1e-4)
    # the two stacked LiDARs sit about 1.35 m ahead of the rear axle and 1.9 m above the road
    origin = f0.T_base_lidar[:3, 3]
    assert 1.2 < origin[0] < 1.5 and abs(origin[1]) < 0.05 and 1.7 < origin[2] < 2.1


def test_object_flow_of_a_static_world_is_zero():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(50, 3)) * 10
    T = np.eye(4)
    T[:3, :3] = [[np.cos(0.1), -np.sin(0.1), 0], [np.sin(0.1), np.cos(0.1), 0], [0, 0, 1]]
    T[:3, 3] = [-0.8, 0.1, 0.0]
    av2_flow = transform_points(T, p) - p
    np.testing.assert_allclose(object_flow(p, av2_flow, T), 0, atol=1e-5)
    moved = object_flow(p, transform_points(T, p + [1.0, 0, 0]) - p, T)
    np.testing.assert_allclose(moved, np.tile([1.0, 0, 0], (50, 1)), atol=1e-5)
    assert invert_transform(T).shape == (4, 4)


def test_missing_folder_is_named(tmp_path):
    (tmp_path / "sensors" / "lidar").mkdir(parents=True)
    with pytest.raises(Av2Error, match="city_SE3_egovehicle"):
        Av2Log(tmp_path)
