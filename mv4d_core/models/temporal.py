"""Temporal fusion: warp the previous frame's volume into the current base_link and fuse it.

``T_prev_cur`` (B, 4, 4) maps current base_link points into the previous base_link
(``inv(T_world_prev) @ T_world_cur``). Each current voxel centre is moved with it and the previous
volume is sampled there (trilinear, zeros outside), as MIM4D's ``shift_feature`` does.

"No previous frame" is data, not a Python branch: ``prev_valid`` (B,) is 1 where ``prev_volume``
holds a real previous frame and 0 otherwise, and multiplies the warped volume and its mask away,
so one graph serves first and later frames (and mixed batches).
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


def exporting() -> bool:
    """True while ``torch.export`` (and so ``torch.onnx.export(dynamo=True)``) traces the model."""
    return bool(torch.compiler.is_exporting())


def trilinear_sample_gather(volume: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample(volume, coords, mode="bilinear", padding_mode="zeros", align_corners=False)`` for
    5D inputs, written as row gathers: ONNX has a 5D GridSample only from opset 20 (mv4d exports 18)
    and TensorRT's GridSample is 4D. About 14x slower than ``grid_sample`` in eager PyTorch on CPU,
    so the model uses it only while exporting.

    ``volume`` (B, C, D0, D1, D2); ``coords`` (B, P0, P1, P2, 3) with the last axis ordered
    (D2, D1, D0) in [-1, 1] (grid_sample convention) -> ``(B, C, P0, P1, P2)``.
    """
    B, C, D0, D1, D2 = volume.shape
    out_shape = coords.shape[1:4]
    g = coords.reshape(B, -1, 3)
    sizes = (D2, D1, D0)
    # grid_sample's unnormalisation for align_corners=False.
    pos = [((g[..., k] + 1) * sizes[k] - 1) * 0.5 for k in range(3)]                 # (B, P) each, order (d2, d1, d0)
    lo = [torch.floor(p) for p in pos]
    frac = [p - f for p, f in zip(pos, lo)]
    # Gather whole C-vectors (rows of a (B*V, C) table, batch folded into the row index): one index per
    # sample point and corner instead of an index expanded over the channels.
    V = D0 * D1 * D2
    table = volume.reshape(B, C, V).transpose(1, 2).reshape(B * V, C)
    row0 = torch.arange(B, device=volume.device, dtype=torch.int64)[:, None] * V
    out = volume.new_zeros(B, g.shape[1], C)
    for c2 in (0, 1):
        for c1 in (0, 1):
            for c0 in (0, 1):
                i2, i1, i0 = lo[0] + c2, lo[1] + c1, lo[2] + c0
                w = ((frac[0] if c2 else 1 - frac[0]) * (frac[1] if c1 else 1 - frac[1])
                     * (frac[2] if c0 else 1 - frac[2]))
                ok = (i2 >= 0) & (i2 < D2) & (i1 >= 0) & (i1 < D1) & (i0 >= 0) & (i0 < D0)
                w = torch.where(ok, w, torch.zeros_like(w))
                lin = (torch.clamp(i0, 0, D0 - 1) * D1 + torch.clamp(i1, 0, D1 - 1)) * D2 + torch.clamp(i2, 0, D2 - 1)
                rows = torch.index_select(table, 0, (lin.to(torch.int64) + row0).reshape(-1)).reshape(B, -1, C)
                out = out + rows * w[..., None]
    return out.transpose(1, 2).reshape(B, C, *out_shape)


def warp_volume(prev_volume: torch.Tensor, T_prev_cur: torch.Tensor, grid: VoxelGridSpec,
                return_valid: bool = False):
    """Resample ``prev_volume`` (B, C, X, Y, Z) into the current frame -> ``(B, C, X, Y, Z)``.

    With ``return_valid`` also returns ``(B, 1, X, Y, Z)`` float: 1 where the warped centre lies inside
    the previous grid. ``F.grid_sample`` in eager mode, :func:`trilinear_sample_gather` (equal to
    float rounding) while exporting.
    """
    B = prev_volume.shape[0]
    centers = voxel_centers_torch(grid, prev_volume.device, prev_volume.dtype)
    X, Y, Z = grid.shape
    pts_prev = transform_points(T_prev_cur.to(prev_volume.dtype), centers.reshape(1, -1, 3).expand(B, -1, -1))
    coords = grid_sample_coords(pts_prev, grid).reshape(B, X, Y, Z, 3)
    if exporting():
        warped = trilinear_sample_gather(prev_volume, coords)
    else:
        warped = F.grid_sample(prev_volume, coords, mode="bilinear", padding_mode="zeros", align_corners=False)
    if not return_valid:
        return warped
    ok = coords.abs() <= 1          # per-axis ANDs rather than all(): no ReduceMin over booleans in ONNX
    valid = (ok[..., 0] & ok[..., 1] & ok[..., 2]).unsqueeze(1).to(prev_volume.dtype)
    return warped, valid


class TemporalFusion(nn.Module):
    """``concat(current, warped previous, valid mask)`` -> 1x1x1 conv -> C channels.

    ``prev_valid`` (B,) = 0 zeroes the warped part and the mask, which is the first frame of a
    sequence, so the same weights and graph serve it. The conv is initialised to pass the current
    volume through.
    """

    def __init__(self, channels: int, grid: VoxelGridSpec) -> None:
        super().__init__()
        self.grid = grid
        self.fuse = nn.Conv3d(2 * channels + 1, channels, 1)
        with torch.no_grad():
            self.fuse.weight.zero_()
            self.fuse.bias.zero_()
            self.fuse.weight[:, :channels, 0, 0, 0] = torch.eye(channels)

    def forward(self, current: torch.Tensor, prev_volume: torch.Tensor, T_prev_cur: torch.Tensor,
                prev_valid: torch.Tensor) -> torch.Tensor:
        if prev_volume.shape != current.shape:
            raise ValueError(f"prev_volume shape {tuple(prev_volume.shape)} != current {tuple(current.shape)}")
        warped, valid = warp_volume(prev_volume, T_prev_cur, self.grid, return_valid=True)
        gate = prev_valid.to(current.dtype).reshape(-1, 1, 1, 1, 1)
        return self.fuse(torch.cat([current, warped * gate, valid * gate], 1))
