"""Distilling a slow label-free flow teacher into the flow head (ZeroFlow's recipe).

The teacher (``mv4d_core.geometry.scene_flow.cluster_rigid_flow``, run offline over the training
sweeps) gives each LiDAR point of frame ``t`` a displacement to ``t+1`` (object motion, base_link t).
The loss is the mean Huber error between the flow volume sampled at those points times the frame
interval and the teacher's displacement, with the teacher's moving points weighted ``moving_weight``
times the static ones: they are few (a few % of a sweep) and are what the head has to learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mv4d_core.geometry.voxel_grid import VoxelGridSpec
from mv4d_core.losses.base import WeightedLoss
from mv4d_core.losses.flow_chamfer import batch_mean, point_displacement


class FlowDistillationLoss(WeightedLoss):
    """``forward(flow_mps (B, 3, X, Y, Z), points [B x (P_b, 3)], target_m [B x (P_b, 3)], dt_s (B,))``
    -> mean over the batch of the weighted Huber error (``delta_m``) of ``v(p) dt`` against ``target_m``."""

    default_reads = {"flow_mps": "flow_mps", "points": "flow_teacher_points", "target_m": "flow_teacher_m",
                     "dt_s": "next_dt_s"}

    def __init__(self, weight: float = 1.0, enable_after: int = 0, reads=None, *, grid: VoxelGridSpec,
                 moving_weight: float = 10.0, moving_threshold_m: float = 0.05, delta_m: float = 0.1,
                 read: str = "trilinear"):
        super().__init__(weight, enable_after, reads)
        self.grid = grid
        self.read = read
        self.moving_weight = moving_weight
        self.moving_threshold_m = moving_threshold_m
        self.delta_m = delta_m

    def forward(self, flow_mps: torch.Tensor, points: Sequence[torch.Tensor], target_m: Sequence[torch.Tensor],
                dt_s: torch.Tensor) -> torch.Tensor:
        B = flow_mps.shape[0]
        if len(points) != B or len(target_m) != B:
            raise ValueError(f"FlowDistillationLoss: {len(points)}/{len(target_m)} point sets for a batch of {B}")
        def term(b):
            t = target_m[b].to(flow_mps.dtype)
            pred = point_displacement(flow_mps[b], points[b], self.grid, float(dt_s[b]), self.read)
            err = F.huber_loss(pred, t, delta=self.delta_m, reduction="none").sum(1)
            w = torch.where(t.norm(dim=1) >= self.moving_threshold_m, self.moving_weight, 1.0)
            return (err * w).sum() / w.sum()

        return batch_mean(flow_mps, points, term)
