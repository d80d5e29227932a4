"""Stratified samples along rays, clipped to the grid's axis-aligned box and a near plane."""

from __future__ import annotations

import torch

from mv4d_core.geometry.voxel_grid import VoxelGridSpec


def ray_aabb(origins: torch.Tensor, directions: torch.Tensor, box_min, box_max):
    """Slab test. ``(..., 3)`` rays -> ``(t_enter (...), t_exit (...))``; ``t_exit <= t_enter`` means a miss."""
    lo = origins.new_tensor(box_min)
    hi = origins.new_tensor(box_max)
    inv = 1.0 / torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t0 = (lo - origins) * inv
    t1 = (hi - origins) * inv
    t_enter = torch.minimum(t0, t1).amax(-1)
    t_exit = torch.maximum(t0, t1).amin(-1)
    return t_enter, t_exit


def stratified_samples(origins: torch.Tensor, directions: torch.Tensor, grid: VoxelGridSpec, num_samples: int,
                       near_m: float = 0.5, far_m: float | None = None, jitter: bool = True,
                       generator: torch.Generator | None = None):
    """``num_samples`` stratified ranges per ray between ``max(near, box entry)`` and ``min(far, box exit)``.

    Returns ``(t (..., S), deltas (..., S), hit (...))``: sample ``i`` lies in bin ``[e_i, e_{i+1})``
    (uniform bins) at a uniform random position (bin centre without jitter); ``deltas`` are the bin
    widths. Rays missing the box get zero-width bins (no contribution).
    """
    t_enter, t_exit = ray_aabb(origins, directions, grid.range_min, grid.range_max)
    t_near = t_enter.clamp_min(near_m)
    t_far = t_exit if far_m is None else t_exit.clamp_max(far_m)
    hit = t_far > t_near
    t_far = torch.where(hit, t_far, t_near)
    steps = torch.linspace(0.0, 1.0, num_samples + 1, device=origins.device, dtype=origins.dtype)
    edges = t_near[..., None] + (t_far - t_near)[..., None] * steps          # (..., S+1)
    widths = edges[..., 1:] - edges[..., :-1]
    if jitter:
        u = torch.rand(widths.shape, generator=generator,
                       device=origins.device if generator is None else generator.device)
        u = u.to(device=origins.device, dtype=origins.dtype)
    else:
        u = torch.full_like(widths, 0.5)
    return edges[..., :-1] + u * widths, widths, hit


def sample_points(origins: torch.Tensor, directions: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` rays and ``(..., S)`` ranges -> points ``(..., S, 3)``."""
    return origins[..., None, :] + t[..., None] * directions[..., None, :]
