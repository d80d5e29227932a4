"""The published occupancy rule agrees with how occupied voxels are defined (GT, LiDAR labels, loss).

A voxel is occupied when the surface passes through it. For the exact SDF of the road
(``s = z``) on the TINY grid, whose road layer spans z in [-0.2, 0.6] (centre +0.2 m), that is
``s <= half a voxel`` at the centre; SelfOcc's ``s <= 0`` marks the unobservable layer under the
road instead and never the road itself.
"""

import numpy as np
import torch

from mv4d_core.data import classes as C
from mv4d_core.data.synth.world import make_world
from mv4d_core.data.synth.occupancy import occupancy_at
from mv4d_core.geometry.voxel_grid import TINY
from mv4d_core.models.config import ModelConfig
from mv4d_core.models.heads import occupancy_from_sdf, occupancy_logits_from_sdf


def _road_sdf(grid):
    z = grid.range_min[2] + (np.arange(grid.shape[2]) + 0.5) * grid.voxel_size[2]
    return np.broadcast_to(z, grid.shape).copy()          # exact SDF of the half-space z <= 0


def test_default_margin_is_half_the_smallest_voxel_edge_and_zero_gives_selfocc():
    assert ModelConfig.tiny().occupancy_margin_m == 0.4
    assert ModelConfig.base().occupancy_margin_m == 0.2
    assert ModelConfig.tiny().replace(occupancy_sdf_margin_m=0.0).occupancy_margin_m == 0.0


def test_probability_crosses_one_half_at_the_margin_for_any_sharpness():
    sdf = torch.tensor([-1.0, 0.0, 0.39, 0.41, 2.0])
    for inv_s in (0.5, 2.7, 50.0):
        p = occupancy_from_sdf(sdf, inv_s, 0.4)
        assert (p >= 0.5).tolist() == [True, True, True, False, False]
    # the focal loss trains the very logit that inference thresholds
    torch.testing.assert_close(torch.logit(occupancy_from_sdf(sdf, 2.7, 0.4)),
                               occupancy_logits_from_sdf(sdf, 2.7, 0.4))


def test_exact_road_sdf_with_the_model_rule_reproduces_the_synthetic_road_layer():
    world = make_world(0, duration_s=1.0)
    gt = occupancy_at(world, 0.0, np.eye(4), TINY)[0]
    sdf = _road_sdf(TINY)
    model_rule = sdf <= ModelConfig.tiny().occupancy_margin_m
    selfocc_rule = sdf <= 0.0
    road = int(np.floor((0.0 - TINY.range_min[2]) / TINY.voxel_size[2]))
    # the GT road layer is occupied everywhere (buildings etc. stand on it), the layer below unknown
    assert np.all(gt[:, :, road] != C.FREE) and np.all(gt[:, :, :road] == C.IGNORE)
    assert np.all(model_rule[:, :, road]) and not np.any(model_rule[:, :, road + 1:])
    assert not np.any(selfocc_rule[:, :, road])
