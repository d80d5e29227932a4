"""3D neck and per-voxel heads: SDF, colour and scene flow.

Units and frames (base_link, grid ``(X, Y, Z)``):

* SDF in metres, positive in free space. A fixed prior ``z - ground_z_m`` is added to the head
  output (SelfOcc initialises its SDF bias to ``z + 1.6``; mv4d's base_link is on the ground), and the
  last conv starts at zero, so an untrained model predicts a flat ground plane.
* Occupancy probability is derived from the SDF with the renderer's NeuS sharpness:
  ``p_occ = sigmoid((margin - sdf) * inv_s)`` (NeuS's "inside" probability ``1 - Phi(s inv_s)``
  shifted by ``margin``), so ``p_occ >= 0.5  <=>  sdf <= margin`` for any sharpness. With the default
  margin of half a voxel a voxel counts as occupied when the surface passes through it, the way
  LiDAR-fused labels and Occ3D define occupancy; ``margin = 0`` is SelfOcc's ``1[s <= 0]``, which on a
  grid whose layer straddles the road (centre above it) can never mark the road layer occupied.
* Colour in [0, 1] (sigmoid; trained by the rendered-RGB and photometric losses), flow in m/s along
  base_link axes (velocity of the voxel content; last layer ~N(0, 1e-2), bias 0).

Every head has a loss: there is no semantic head (no label-free source of classes here) and no
confidence head.
"""

from __future__ import annotations

import torch
from torch import nn

from mv4d_core.geometry.voxel_grid import VoxelGridSpec


#: Speed (m/s) from which voxel content counts as moving (AV2's dynamic threshold: 0.05 m per 0.1 s).
MOVING_SPEED_MPS = 0.5


def norm3d(channels: int, groups: int = 8) -> nn.GroupNorm:
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


class Neck3D(nn.Module):
    """``num_layers`` x (Conv3d 3x3x3 + GroupNorm + ReLU): ``(B, C_in, X, Y, Z)`` -> ``(B, C_out, X, Y, Z)``."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int) -> None:
        super().__init__()
        layers = []
        c = in_channels
        for _ in range(num_layers):
            layers += [nn.Conv3d(c, out_channels, 3, 1, 1, bias=False), norm3d(out_channels), nn.ReLU(inplace=True)]
            c = out_channels
        self.net = nn.Sequential(*layers) if layers else nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VoxelHeads(nn.Module):
    """1x1x1 conv heads on the neck features. Returns a dict of volumes (see module docstring)."""

    def __init__(self, channels: int, grid: VoxelGridSpec, ground_z_m: float = 0.0, flow_gate: bool = False) -> None:
        super().__init__()
        self.sdf = nn.Conv3d(channels, 1, 1)
        self.rgb = nn.Conv3d(channels, 3, 1)
        self.flow = nn.Conv3d(channels, 3, 1)
        # Optional motion gate: flow = velocity * sigmoid(gate), so "this voxel is static" is one
        # logit going negative instead of three velocity components held at zero.
        self.flow_gate = nn.Conv3d(channels, 1, 1) if flow_gate else None
        nn.init.zeros_(self.sdf.weight)
        nn.init.zeros_(self.sdf.bias)
        nn.init.normal_(self.flow.weight, 0.0, 1e-2)
        nn.init.zeros_(self.flow.bias)
        X, Y, Z = grid.shape
        z = grid.range_min[2] + (torch.arange(Z, dtype=torch.float32) + 0.5) * grid.voxel_size[2]
        self.register_buffer("sdf_prior", (z - ground_z_m).view(1, 1, 1, Z).expand(1, X, Y, Z).clone(),
                             persistent=False)

    def forward(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        flow, motion = self._flow(feats)
        return {
            "sdf": self.sdf(feats)[:, 0] + self.sdf_prior,            # (B, X, Y, Z) m
            "rgb": torch.sigmoid(self.rgb(feats)),                    # (B, 3, X, Y, Z)
            "flow_mps": flow,                                         # (B, 3, X, Y, Z)
            "motion_prob": motion,                                    # (B, X, Y, Z) in [0, 1]
        }

    def _flow(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(flow, probability that the voxel content moves): the gate's sigmoid, or without a gate
        whether the speed reaches :data:`MOVING_SPEED_MPS`."""
        v = self.flow(feats)
        if self.flow_gate is None:
            return v, (v.norm(dim=1) >= MOVING_SPEED_MPS).to(v.dtype)
        p = torch.sigmoid(self.flow_gate(feats))
        return v * p, p[:, 0]


def occupancy_logits_from_sdf(sdf: torch.Tensor, inv_s: torch.Tensor | float, margin_m: float = 0.0) -> torch.Tensor:
    """``(margin - sdf) * inv_s``: the logit the focal occupancy loss trains and inference thresholds."""
    return (margin_m - sdf) * inv_s


def occupancy_from_sdf(sdf: torch.Tensor, inv_s: torch.Tensor | float, margin_m: float = 0.0) -> torch.Tensor:
    """``p_occ = sigmoid((margin - sdf) * inv_s)``; ``>= 0.5`` exactly where ``sdf <= margin``."""
    return torch.sigmoid(occupancy_logits_from_sdf(sdf, inv_s, margin_m))
