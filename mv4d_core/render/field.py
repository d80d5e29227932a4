"""Trilinear lookup of a voxel volume at continuous base_link points (the renderer's "field").

Both methods treat voxel ``i`` as a sample at its centre and clamp to the border voxels outside the grid
(identical to ``grid_sample(..., align_corners=False, padding_mode="border")``). ``gather`` is plain
indexing arithmetic, so it supports any order of autograd (no double-backward limits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mv4d_core.geometry.voxel_grid import VoxelGridSpec


def sample_volume(volume: torch.Tensor, points: torch.Tensor, grid: VoxelGridSpec,
                  method: str = "grid_sample") -> torch.Tensor:
    """``volume`` (B, C, X, Y, Z), ``points`` (B, P, 3) metres -> ``(B, P, C)``."""
    if method == "grid_sample":
        return _sample_grid_sample(volume, points, grid)
    if method == "gather":
        return _sample_gather(volume, points, grid)
    raise ValueError(f"unknown field sampling method {method!r} (grid_sample | gather)")


def _sample_grid_sample(volume: torch.Tensor, points: torch.Tensor, grid: VoxelGridSpec) -> torch.Tensor:
    B, P = points.shape[:2]
    coords = grid.normalized(points.to(volume.dtype)).flip(-1).view(B, P, 1, 1, 3)   # (W,H,D) = (z,y,x)
    out = F.grid_sample(volume, coords, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(B, volume.shape[1], P).transpose(1, 2)


def _sample_gather(volume: torch.Tensor, points: torch.Tensor, grid: VoxelGridSpec) -> torch.Tensor:
    B, C, X, Y, Z = volume.shape
    P = points.shape[1]
    lo = points.new_tensor(grid.range_min)
    vs = points.new_tensor(grid.voxel_size)
    dims = points.new_tensor((X, Y, Z))
    f = ((points - lo) / vs - 0.5).clamp(min=torch.zeros_like(dims), max=dims - 1)   # continuous index
    i0 = f.floor().long()                       # f is already inside [0, n-1]
    w1 = (f - i0.to(f.dtype)).to(volume.dtype)
    i1 = torch.minimum(i0 + 1, (dims - 1).long())
    flat = volume.reshape(B, C, X * Y * Z)
    out = 0
    for dx in (0, 1):
        ix = i1[..., 0] if dx else i0[..., 0]
        wx = w1[..., 0] if dx else 1 - w1[..., 0]
        for dy in (0, 1):
            iy = i1[..., 1] if dy else i0[..., 1]
            wy = w1[..., 1] if dy else 1 - w1[..., 1]
            for dz in (0, 1):
                iz = i1[..., 2] if dz else i0[..., 2]
                wz = w1[..., 2] if dz else 1 - w1[..., 2]
                idx = ((ix * Y + iy) * Z + iz).view(B, 1, P).expand(B, C, P)
                out = out + torch.gather(flat, 2, idx) * (wx * wy * wz).view(B, 1, P)
    return out.transpose(1, 2)


def voxel_values(volume: torch.Tensor, points: torch.Tensor, grid: VoxelGridSpec) -> torch.Tensor:
    """``volume`` (B, C, X, Y, Z), ``points`` (B, P, 3) metres -> ``(B, P, C)``: the value of the voxel
    holding each point (0 outside the grid), the way a subscriber reads a per-voxel output such as
    the published flow. Differentiable in ``volume``, not in ``points``."""
    B, C, X, Y, Z = volume.shape
    P = points.shape[1]
    lo = points.new_tensor(grid.range_min)
    vs = points.new_tensor(grid.voxel_size)
    dims = torch.tensor((X, Y, Z), device=points.device)
    idx = torch.floor((points.detach() - lo) / vs).long()
    inside = ((idx >= 0) & (idx < dims)).all(-1) & torch.isfinite(points).all(-1)             # (B, P)
    idx = torch.where(inside[..., None], idx, torch.zeros_like(idx))
    flat_idx = ((idx[..., 0] * Y + idx[..., 1]) * Z + idx[..., 2]).view(B, 1, P).expand(B, C, P)
    out = torch.gather(volume.reshape(B, C, X * Y * Z), 2, flat_idx) * inside.view(B, 1, P).to(volume.dtype)
    return out.transpose(1, 2)
