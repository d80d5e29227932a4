"""Scene flow on LiDAR-only data: the label-free flow objective fitted to a sweep pair, scored
against flow labels (Argoverse 2 has no images, so this is what can be scored there)."""

import json

import numpy as np
import pytest

from mv4d_core.cli import main as mv4d
from mv4d_core.eval.lidar_flow import FlowFitConfig, fit_flow_volume, flow_at_points
from mv4d_core.geometry.voxel_grid import VoxelGridSpec

GRID = VoxelGridSpec((-12.0, -12.0, -1.0), (12.0, 12.0, 3.0), (0.8, 0.8, 0.8))


def _scene(rng):
    """A road, a static wall and a 2 m cube moving at +5 m/s in x; the ego drives 1 m/s forward."""
    road = np.c_[rng.uniform(-10, 10, (3000, 2)), np.zeros(3000)]
    wall = np.c_[rng.uniform(-10, 10, 1500), np.full(1500, 8.0), rng.uniform(0, 2.5, 1500)]
    cube = rng.uniform([-3, -3, 0.4], [-1, -1, 2.4], (1500, 3))
    return road, wall, cube


def test_fit_moves_the_mover_and_holds_the_road():
    rng = np.random.default_rng(0)
    dt, v = 0.1, np.array([5.0, 0.0, 0.0])
    road, wall, cube = _scene(rng)
    xyz0 = np.concatenate([road, wall, cube]).astype(np.float32)
    road1, wall1, cube1 = _scene(np.random.default_rng(1))   # new samples of the same surfaces
    world1 = np.concatenate([road1, wall1, cube1 + v * dt])
    T_1_0 = np.eye(4)
    T_1_0[0, 3] = -0.1                                        # ego moved 0.1 m forward
    xyz1 = (world1 + T_1_0[:3, 3]).astype(np.float32)
    cfg = FlowFitConfig(iters=60, src_points=1500, dst_points=3000)
    vol, history = fit_flow_volume(xyz0, xyz1, T_1_0, dt, GRID, cfg)
    assert vol.shape == (3, *GRID.shape) and history[-1] < history[0]
    flow = flow_at_points(vol, xyz0, GRID, dt)
    moving = np.zeros(len(xyz0), bool)
    moving[-len(cube):] = True
    gt = np.where(moving[:, None], v * dt, 0.0)
    err = np.linalg.norm(flow - gt, axis=1)
    zero_err = np.linalg.norm(gt, axis=1)
    assert err[moving].mean() < 0.6 * zero_err[moving].mean()       # the cube is moved the right way
    assert np.mean(flow[moving, 0]) > 0.2                            # +x, metres over dt (true 0.5)
    # the static-road prior holds the road (the few exceptions share a 0.8 m voxel with the cube or
    # the wall and pick up their flow by trilinear interpolation)
    road_disp = np.linalg.norm(flow[:len(road)], axis=1)
    assert np.median(road_disp) < 0.01 and np.percentile(road_disp, 90) < 0.05


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="dt_s"):
        fit_flow_volume(np.zeros((5, 3)), np.zeros((5, 3)), np.eye(4), 0.0, GRID)
    with pytest.raises(ValueError, match="non-ground"):
        fit_flow_volume(np.zeros((5, 3)), np.zeros((5, 3)), np.eye(4), 0.1, GRID)


@pytest.mark.data
def test_eval_flow_cli_on_the_argoverse2_sample(shared_data, tmp_path, capsys):
    out = tmp_path / "av2.json"
    assert mv4d(["eval-flow", "--data", str(shared_data / "argoverse2_av2api"), "--json", str(out),
                 "--iters", "5", "--threads", "2"]) == 0
    report = json.loads(out.read_text())
    (log,) = report["logs"].values()
    res = log["results"]
    zero = res["baseline: zero"]["flow"]
    assert zero["static"]["epe3d"] < 0.01 and zero["dynamic"]["epe3d"] > 0.3   # labels: movers move
    fit = res["label-free flow objective (test-time fit)"]["flow"]
    assert fit["all"]["num_points"] == zero["all"]["num_points"] == log["fit"]["points_in_grid"] > 50000
    assert 0 < zero["dynamic"]["num_points"] < zero["all"]["num_points"]
    assert "no images" in out.with_suffix(".md").read_text()
    assert mv4d(["eval-flow", "--data", str(tmp_path / "nope"), "--json", str(out)]) == 2
