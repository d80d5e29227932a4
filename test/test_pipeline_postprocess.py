"""Post-processing: model outputs -> message-ready arrays (occupancy cloud, BEV grid, markers, flow, depth)."""

from __future__ import annotations

import numpy as np
import pytest

from mv4d_core.geometry.camera import PinholeCamera, project
from mv4d_core.geometry.transforms import make_transform, transform_points
from mv4d_core.geometry.voxel_grid import VoxelGridSpec
from mv4d_core.pipeline.postprocess import (FLOW_DTYPE, OCCUPANCY_DTYPE, POINTS_DTYPE, backproject_depth, bev_grid,
                                            depth_image, flow_points, marker_cubes, occupied_voxels, pack_rgb,
                                            points_cloud, unpack_rgb)

GRID = VoxelGridSpec((-4.0, -2.0, -1.0), (4.0, 2.0, 1.0), (0.5, 0.5, 0.5))  # (16, 8, 4)


def test_occupied_voxels_gives_centres_and_probabilities():
    prob = np.zeros(GRID.shape, np.float32)
    prob[0, 0, 0] = 0.9
    prob[15, 7, 3] = 0.5                            # exactly at the threshold counts as occupied
    prob[3, 3, 3] = 0.49
    prob[5, 5, 1] = np.nan                          # NaN is never occupied
    v = occupied_voxels(prob, GRID, 0.5)
    assert v.dtype == OCCUPANCY_DTYPE and v.dtype.itemsize == 16 and v.dtype.names == ("x", "y", "z", "prob")
    assert len(v) == 2
    np.testing.assert_allclose([v["x"][0], v["y"][0], v["z"][0]], [-3.75, -1.75, -0.75])
    np.testing.assert_allclose([v["x"][1], v["y"][1], v["z"][1]], [3.75, 1.75, 0.75])
    np.testing.assert_allclose(v["prob"], [0.9, 0.5])


def test_occupied_voxels_checks_the_grid_shape():
    with pytest.raises(ValueError, match="occupancy_prob must be"):
        occupied_voxels(np.zeros((3, 3, 3)), GRID, 0.5)


def test_flow_points_keep_occupied_and_fast_enough_voxels():
    prob = np.zeros(GRID.shape, np.float32)
    flow = np.zeros(GRID.shape + (3,), np.float32)
    prob[2, 2, 2] = prob[4, 4, 2] = prob[6, 6, 2] = 1.0
    flow[2, 2, 2] = (3.0, 0.0, 0.0)
    flow[4, 4, 2] = (0.05, 0.0, 0.0)
    flow[6, 6, 2] = (np.nan, 0.0, 0.0)
    flow[1, 1, 1] = (9.0, 9.0, 9.0)                 # fast but free: not published
    f = flow_points(prob, flow, GRID, 0.5, min_speed_mps=0.1)
    assert f.dtype == FLOW_DTYPE and len(f) == 1
    np.testing.assert_allclose([f["x"][0], f["vx"][0], f["vy"][0]], [GRID.index_to_metric([2, 2, 2])[0], 3.0, 0.0])
    assert len(flow_points(prob, flow, GRID, 0.5, 0.0)) == 2


def test_rgb_packing_round_trips_and_matches_the_rviz_bit_layout():
    rgb = np.array([[255, 0, 0], [0, 128, 1], [12, 34, 56]], np.uint8)
    packed = pack_rgb(rgb)
    assert packed.dtype == np.float32
    assert packed.view(np.uint32)[0] == 0x00FF0000
    np.testing.assert_array_equal(unpack_rgb(packed), rgb)


def test_depth_points_back_project_onto_the_true_3d_points():
    cam = PinholeCamera.from_fov(90.0, 32, 24)
    T_base_cam = make_transform(np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0.0]]), np.array([1.0, 0.0, 1.5]))
    depth = np.full((1, 24, 32), 5.0, np.float32)
    depth[0, 0, 0] = np.inf          # no return: skipped
    depth[0, 0, 1] = 0.0             # invalid: skipped
    depth[0, 0, 2] = 100.0           # beyond max_depth_m: skipped
    colors = np.zeros((1, 24, 32, 3), np.uint8)
    colors[0, 12, 16] = (10, 20, 30)
    pts = points_cloud(*backproject_depth(depth, cam.K[None], T_base_cam[None], colors, stride=1, max_depth_m=50.0)[:2])
    assert pts.dtype == POINTS_DTYPE and len(pts) == 24 * 32 - 3
    xyz = np.stack([pts["x"], pts["y"], pts["z"]], -1)
    # Every point re-projects into the camera at depth 5 inside the image.
    p_cam = transform_points(np.linalg.inv(T_base_cam), xyz.astype(np.float64))
    uv, d, valid = project(cam.K, p_cam, 32, 24)
    assert valid.all()
    np.testing.assert_allclose(d, 5.0, atol=1e-4)
    # The principal-ish pixel (16, 12) lies ~5 m ahead of the camera in base_link and carries its colour.
    hit = np.argmin(np.linalg.norm(uv - [16, 12], axis=1))
    np.testing.assert_allclose(xyz[hit], [6.0, -(16 - cam.cx) / cam.fx * 5, 1.5 - (12 - cam.cy) / cam.fy * 5],
                               atol=1e-4)
    np.testing.assert_array_equal(unpack_rgb(pts["rgb"][hit:hit + 1])[0], [10, 20, 30])
    # Stride thins the cloud.
    assert len(backproject_depth(depth, cam.K[None], T_base_cam[None], colors, stride=4)[0]) < len(pts) / 10


def test_depth_image_marks_invalid_as_nan_and_keeps_inf():
    img = depth_image(np.array([[1.0, 0.0], [-2.0, np.inf]]))
    assert img.dtype == np.float32 and img.flags.c_contiguous
    assert img[0, 0] == 1.0 and np.isnan(img[0, 1]) and np.isnan(img[1, 0]) and img[1, 1] == np.inf


def test_bev_grid_is_row_major_along_y_with_origin_at_cell_zero():
    prob = np.zeros(GRID.shape, np.float32)
    prob[3, 5, 1] = 0.8      # inside the slab
    prob[7, 2, 3] = 1.0      # z centre 0.75: above z_max 0.5 -> ignored
    bev = bev_grid(prob, GRID, z_min_m=-1.0, z_max_m=0.5)
    assert (bev.width, bev.height, bev.resolution) == (16, 8, 0.5)
    assert bev.data.dtype == np.int8 and bev.data.shape == (16 * 8,)
    assert bev.origin_xyz == (-4.0, -2.0, -1.0)
    assert bev.data[5 * bev.width + 3] == 80          # data[row=y * width + col=x]
    assert bev.data[2 * bev.width + 7] == 0
    assert bev.data.max() == 80 and bev.data.min() == 0


def test_bev_grid_marks_unobserved_columns_unknown():
    prob = np.full(GRID.shape, 0.2, np.float32)
    observed = np.ones(GRID.shape, bool)
    observed[0, 0, :] = False
    bev = bev_grid(prob, GRID, -1.0, 1.0, observed=observed)
    assert bev.data[0] == -1 and bev.data[1] == 20


def test_marker_cubes_are_capped_keep_the_most_probable_and_group_by_layer():
    rng = np.random.default_rng(0)
    v = np.zeros(100, OCCUPANCY_DTYPE)
    v["x"] = np.arange(100) * 0.01 - 0.5
    v["z"] = GRID.range_min[2] + (np.arange(100) % 3 + 0.5) * GRID.voxel_size[2]    # layers 0, 1, 2
    v["prob"] = rng.uniform(0.5, 1.0, 100)
    cubes = marker_cubes(v, GRID, max_markers=10)
    assert sum(len(c.points) for c in cubes) == 10
    kept_x = np.sort(np.concatenate([c.points[:, 0] for c in cubes]))
    np.testing.assert_allclose(kept_x, np.sort(v["x"][np.argsort(-v["prob"])[:10]]))
    assert [c.layer for c in cubes] == sorted({c.layer for c in cubes})
    for c in cubes:
        layer = np.floor((c.points[:, 2] - GRID.range_min[2]) / GRID.voxel_size[2])
        assert np.all(layer == c.layer)
        assert len(c.color_rgba) == 4 and all(0 <= x <= 1 for x in c.color_rgba)
    assert len({c.color_rgba for c in cubes}) == len(cubes)          # one colour per height
    assert sum(len(c.points) for c in marker_cubes(v, GRID, 1000)) == 100
    with pytest.raises(ValueError, match="max_markers"):
        marker_cubes(v, GRID, 0)
