"""Temporal fusion: warp the previous frame's volume into the current base_link and fuse it.

``T_prev_cur`` (B, 4, 4) maps current base_link points into the previous base_link
(``inv(T_world_prev) @ T_world_cur``). Each current voxel centre is moved with it and the previous
volume is sampled there (trilinear, zeros outside), as MIM4D's ``shift_feature`` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mv4d_core.geometry.transforms import transform_points
from mv4d_core.geometry.voxel_grid import VoxelGridSpec


def voxel_centers_torch(grid: VoxelGridSpec, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(X, Y, Z, 3)`` voxel centres in metres as a tensor."""
    axes = [grid.range_min[i] + (torch.arange(grid.shape[i], device=device, dtype=dtype) + 0.5) * grid.voxel_size[i]
            for i in range(3)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)


def grid_sample_coords(points: torch.Tensor, grid: VoxelGridSpec) -> torch.Tensor:
    """Metric points ``(..., 3)`` (x, y, z) -> ``grid_sample`` coordinates for a (B, C, X, Y, Z) volume.

    ``grid_sample`` reads its last coordinate axis as (W, H, D) = (Z, Y, X), so the order is reversed.
    """
    return grid.normalized(points).flip(-1)


def warp_volume(prev_volume: torch.Tensor, T_prev_cur: torch.Tensor, grid: VoxelGridSpec,
                return_valid: bool = False):
    """Resample ``prev_volume`` (B, C, X, Y, Z) into the current frame -> ``(B, C, X, Y, Z)``.

    With ``return_valid`` also returns ``(B, 1, X, Y, Z)`` float: 1 where the warped centre lies inside
    the previous grid.
    """
    B = prev_volume.shape[0]
    centers = voxel_centers_torch(grid, prev_volume.device, prev_volume.dtype)
    X, Y, Z = grid.shape
    pts_prev = transform_points(T_prev_cur.to(prev_volume.dtype), centers.reshape(1, -1, 3).expand(B, -1, -1))
    coords = grid_sample_coords(pts_prev, grid).reshape(B, X, Y, Z, 3)
    warped = F.grid_sample(prev_volume, coords, mode="bilinear", padding_mode="zeros", align_corners=False)
    if not return_valid:
        return warped
    valid = (coords.abs() <= 1).all(-1).unsqueeze(1).to(prev_volume.dtype)
    return warped, valid


class TemporalFusion(nn.Module):
    """``concat(current, warped previous, valid mask)`` -> 1x1x1 conv -> C channels.

    Without a previous volume the warped part and the mask are zeros, so the same weights serve the
    first frame of a sequence. The conv is initialised to pass the current volume through.
    """

    def __init__(self, channels: int, grid: VoxelGridSpec) -> None:
        super().__init__()
        self.grid = grid
        self.fuse = nn.Conv3d(2 * channels + 1, channels, 1)
        with torch.no_grad():
            self.fuse.weight.zero_()
            self.fuse.bias.zero_()
            self.fuse.weight[:, :channels, 0, 0, 0] = torch.eye(channels)

    def forward(self, current: torch.Tensor, prev_volume: torch.Tensor | None,
                T_prev_cur: torch.Tensor | None) -> torch.Tensor:
        if prev_volume is None:
            warped = torch.zeros_like(current)
            valid = current.new_zeros(current.shape[0], 1, *current.shape[2:])
        else:
            if T_prev_cur is None:
                raise ValueError("prev_volume given without T_prev_cur (B, 4, 4)")
            if prev_volume.shape != current.shape:
                raise ValueError(f"prev_volume shape {tuple(prev_volume.shape)} != current {tuple(current.shape)}")
            warped, valid = warp_volume(prev_volume, T_prev_cur, self.grid, return_valid=True)
        return self.fuse(torch.cat([current, warped, valid], 1))
