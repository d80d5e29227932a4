"""NeuS-style SDF volume rendering of a voxel field: rays -> samples -> field lookup -> alpha -> composite.

The field is ``(B, C, X, Y, Z)`` on a :class:`VoxelGridSpec` (channel ``sdf_channel`` is the SDF in metres,
the others are composited, e.g. colour then semantic logits). Rays must be in the field's frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mv4d_core.geometry.voxel_grid import VoxelGridSpec
from mv4d_core.render.alpha import annealed_slope, neus_alpha, section_sdf, slope_along_ray
from mv4d_core.render.composite import composite
from mv4d_core.render.field import sample_volume
from mv4d_core.render.fused import fused_neus_composite
from mv4d_core.render.rays import RayBundle
from mv4d_core.render.sampler import sample_points, stratified_samples


@dataclass
class RenderOutputs:
    """Per ray ``(B, R)``: ``depth_m`` optical z (m) = ``depth_t * z_per_t``; ``depth_t`` range along the ray
    (``sum w t``, not normalised); ``values`` (B, R, C-1) composited non-SDF channels (``rgb`` = first 3);
    ``opacity`` (sum of weights); per sample ``(B, R, S)``: ``weights``, ``t`` ranges (m), ``sdf`` (m),
    ``points`` (B, R, S, 3) in the field frame; ``hit`` (B, R) whether the ray crosses the grid box."""

    depth_m: torch.Tensor
    depth_t: torch.Tensor
    values: torch.Tensor
    opacity: torch.Tensor
    weights: torch.Tensor
    t: torch.Tensor
    sdf: torch.Tensor
    points: torch.Tensor
    hit: torch.Tensor

    @property
    def rgb(self) -> torch.Tensor:
        return self.values[..., :3]

    def depth_normalized_m(self, eps: float = 1e-6) -> torch.Tensor:
        """Optical depth of the weight centroid, ``depth_m / opacity`` (for rays that may not saturate)."""
        return self.depth_m / self.opacity.clamp_min(eps)


def render_rays(field: torch.Tensor, grid: VoxelGridSpec, rays: RayBundle, inv_s: torch.Tensor | float,
                num_samples: int = 64, near_m: float = 0.5, far_m: float | None = None, jitter: bool = True,
                generator: torch.Generator | None = None, cos_anneal: float = 1.0, backend: str = "reference",
                sampling: str = "grid_sample", sdf_channel: int = 0) -> RenderOutputs:
    """Render ``rays`` (B, R) through ``field`` (B, C, X, Y, Z).

    ``inv_s`` is the NeuS sharpness (``Sharpness()`` output or a float); ``cos_anneal`` in [0, 1] the NeuS
    cos-annealing ratio; ``backend`` ``"reference"`` (plain autograd) or ``"fused"`` (one op with a
    hand-written backward; Triton kernel on CUDA when available); ``sampling`` ``"grid_sample"`` or
    ``"gather"`` (see :mod:`mv4d_core.render.field`).
    """
    B, R = rays.shape
    if field.ndim != 5 or field.shape[0] != B:
        raise ValueError(f"field must be (B={B}, C, X, Y, Z), got {tuple(field.shape)}")
    if tuple(field.shape[2:]) != grid.shape:
        raise ValueError(f"field spatial shape {tuple(field.shape[2:])} != grid shape {grid.shape}")
    t, deltas, hit = stratified_samples(rays.origins, rays.directions, grid, num_samples, near_m, far_m, jitter,
                                        generator)
    S = num_samples
    pts = sample_points(rays.origins, rays.directions, t)                       # (B, R, S, 3)
    samples = sample_volume(field, pts.reshape(B, R * S, 3), grid, sampling).reshape(B, R, S, -1)
    sdf = samples[..., sdf_channel]
    values = torch.cat([samples[..., :sdf_channel], samples[..., sdf_channel + 1:]], -1)
    slope = annealed_slope(slope_along_ray(sdf, t), cos_anneal)
    s_prev, s_next = section_sdf(sdf, deltas, slope)
    if not torch.is_tensor(inv_s):
        inv_s = sdf.new_tensor(float(inv_s))
    if backend == "reference":
        alpha = neus_alpha(s_prev, s_next, inv_s)
        weights, depth_t, vals, opacity = composite(alpha, t, values)
    elif backend == "fused":
        C = values.shape[-1]
        weights, depth_t, vals, opacity = fused_neus_composite(
            s_prev.reshape(B * R, S), s_next.reshape(B * R, S), inv_s, t.reshape(B * R, S),
            values.reshape(B * R, S, C))
        weights, depth_t = weights.view(B, R, S), depth_t.view(B, R)
        vals, opacity = vals.view(B, R, C), opacity.view(B, R)
    else:
        raise ValueError(f"unknown render backend {backend!r} (reference | fused)")
    return RenderOutputs(depth_m=depth_t * rays.z_per_t, depth_t=depth_t, values=vals, opacity=opacity,
                         weights=weights, t=t, sdf=sdf, points=pts, hit=hit)
