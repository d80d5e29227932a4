"""The fusion model's LiDAR inputs: the voxel volume, free space, previous sweeps, camera depth and the
classical completions; bad clouds are cleaned and counted."""

from __future__ import annotations

import numpy as np
import pytest

from mv4d_core.geometry.camera import R_BODY_OPTICAL, PinholeCamera
from mv4d_core.geometry.transforms import make_transform
from mv4d_core.geometry.voxel_grid import VoxelGridSpec
from mv4d_core.models.config import LidarConfig
from mv4d_core.models.lidar_inputs import (CURRENT_CHANNELS, LidarStats, Sweep, build_lidar_inputs, camera_depth_inputs,
                                           clean_points, free_space_counts, morphological_completion, nearest_fill,
                                           sweep_volume, volume_channels)

GRID = VoxelGridSpec((-8.0, -8.0, -1.0), (8.0, 8.0, 3.0), (1.0, 1.0, 1.0))    # (16, 16, 4)
ORIGIN = np.array([0.0, 0.0, 1.5])


def _voxel(p):
    return tuple(np.floor((np.asarray(p) - GRID.range_min) / GRID.voxel_size).astype(int))


def test_volume_counts_heights_intensity_and_the_previous_sweep():
    pts = np.array([[5.2, 0.5, 0.3], [5.4, 0.5, 0.1], [-3.5, 2.5, 1.9]], np.float32)
    cur = Sweep(pts, np.array([255.0, 0.0, 102.0], np.float32), np.eye(4), 2_000_000_000)
    prev = Sweep(np.array([[4.5, 0.5, 0.3]], np.float32), None, make_transform(np.eye(3), np.array([-1.0, 0, 0])),
                 1_900_000_000)                          # ego 1 m further back: the point is at x = 3.5 now
    vol = sweep_volume(cur, [prev], ORIGIN, GRID, previous_sweeps=1)
    assert vol.shape == (volume_channels(1),) + GRID.shape == (6, 16, 16, 4)
    a, b = _voxel(pts[0]), _voxel(pts[2])
    assert vol[0][a] == pytest.approx(np.log1p(2)) and vol[0][b] == pytest.approx(np.log1p(1))
    assert vol[1][a] == pytest.approx(((0.3 + 0.1) / 2 - 0.5) / 1.0)      # mean height above the voxel centre
    assert vol[2][a] == pytest.approx(0.5) and vol[2][b] == pytest.approx(0.4)  # mean intensity / 255
    c = _voxel([3.5, 0.5, 0.3])
    assert vol[4][c] == pytest.approx(np.log1p(1)) and vol[5][c] == pytest.approx(0.1)   # count, dt
    assert vol[4].sum() == pytest.approx(np.log1p(1)) and vol[5][a] == 0


def test_free_space_runs_from_the_sensor_to_just_before_the_return():
    free = free_space_counts(np.array([[7.5, 0.5, 1.5]], np.float32), np.array([0.5, 0.5, 1.5]), GRID)
    along = free[8:16, 8, 2]                              # x voxels 0..8 m at y 0.5, z 1.5
    # samples every voxel edge from half a step out: x = 1.0 .. 5.0 (the hit at 7.5 minus one voxel diagonal)
    assert along[1:6].min() >= 1 and not along[6:].any()
    assert free.sum() == along.sum()                      # nowhere else
    assert free_space_counts(np.zeros((0, 3), np.float32), ORIGIN, GRID).sum() == 0


def test_clean_points_drops_nonfinite_and_subsamples_deterministically():
    xyz = np.random.default_rng(0).normal(size=(1000, 3)).astype(np.float32)
    xyz[:7] = np.nan
    inten = np.arange(1000, dtype=np.float32)
    stats = LidarStats()
    a, ia = clean_points(xyz, inten, max_points=300, stats=stats)
    b, _ = clean_points(xyz, inten, max_points=300)
    assert len(a) <= 300 and np.array_equal(a, b) and np.isfinite(a).all()
    assert stats.points == 1000 and stats.nonfinite == 7 and stats.subsampled_away == 993 - len(a)
    assert ia[0] == 7                                       # intensities follow their points


def test_completions_fill_a_plane_and_keep_near_points_in_front():
    sparse = np.zeros((24, 32), np.float32)
    sparse[::3, ::2] = 10.0                               # rings every 3 rows
    for fill in (nearest_fill, morphological_completion):
        dense = fill(sparse)
        assert np.allclose(dense, 10.0, atol=1e-3), fill.__name__
    sparse[12, 16] = 4.0                                  # a near point among far ones
    assert morphological_completion(sparse)[12, 16] < 10.0
    assert not nearest_fill(np.zeros((4, 4), np.float32)).any()
    assert not morphological_completion(np.zeros((4, 4), np.float32)).any()


def test_camera_depth_inputs_project_the_sweep_at_the_model_size():
    cam = PinholeCamera.from_fov(90.0, 32, 24)
    T = make_transform(R_BODY_OPTICAL, np.array([0.0, 0.0, 1.5]))          # looking along +x
    pts = np.array([[6.0, 0.0, 1.5], [6.0, 100.0, 1.5]], np.float32)    # the second is outside the image
    d = camera_depth_inputs(pts, cam.K[None], T[None], 24, 32)
    assert d.shape == (1, 3, 24, 32)
    assert d[0, 2].sum() == 1 and d[0, 0].max() == pytest.approx(6.0)
    assert np.allclose(d[0, 1], 6.0, atol=1e-3)          # one return fills the whole completion


def test_build_lidar_inputs_counts_outside_points_and_gives_none_for_an_empty_cloud():
    cfg = LidarConfig(enabled=True, previous_sweeps=1)
    cam = PinholeCamera.from_fov(90.0, 32, 24)
    K, T = cam.K[None], make_transform(R_BODY_OPTICAL, np.array([0.0, 0.0, 1.5]))[None]
    stats = LidarStats()
    pts = np.array([[6.0, 0.0, 1.5], [60.0, 0.0, 1.5], [np.inf, 0, 0]], np.float32)
    vol, depth = build_lidar_inputs(Sweep(pts, None, np.eye(4), 0), [], ORIGIN, K, T, (24, 32), cfg, GRID, stats)
    assert vol.shape[0] == len(CURRENT_CHANNELS) + 2 and depth.shape == (1, 3, 24, 32)
    assert stats.nonfinite == 1 and stats.outside_grid == 1
    nan_only = np.full((3, 3), np.nan, np.float32)
    assert build_lidar_inputs(Sweep(nan_only, None, np.eye(4), 0), [], ORIGIN, K, T, (24, 32), cfg, GRID) is None
