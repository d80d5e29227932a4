"""Image-space terms on rendered rays: rendered colour vs image (SelfOcc ``RGBLossMS``),
depth head vs rendered depth (mv4d proposal), and a helper that turns a per-pixel depth map into
the one-sample "rays" the :class:`~mv4d_core.losses.photometric.PhotometricLoss` takes, which
makes it the monodepth2-style 2D photometric loss on a depth map.
"""

from __future__ import annotations

import torch

from mv4d_core.geometry.camera import unproject
from mv4d_core.geometry.transforms import transform_points
from mv4d_core.losses.base import WeightedLoss
from mv4d_core.losses.ssim import ssim_dissimilarity


def depth_to_points_base(depth_m: torch.Tensor, uv: torch.Tensor, K: torch.Tensor,
                         T_base_cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel optical depth ``(V, h, w)`` at pixels ``uv`` ``(V, h, w, 2)`` (intrinsics ``K``
    ``(V, 3, 3)`` of those pixel units) -> ``(points_base (V, h, w, 1, 3), weights (V, h, w, 1))``
    for :class:`PhotometricLoss` (one sample per ray, weight 1)."""
    V, h, w = depth_m.shape
    if uv.shape != (V, h, w, 2):
        raise ValueError(f"uv must be {(V, h, w, 2)}, got {tuple(uv.shape)}")
    pts_cam = unproject(K.to(depth_m), uv.reshape(V, -1, 2).to(depth_m), depth_m.reshape(V, -1))
    pts = transform_points(T_base_cam.to(depth_m), pts_cam).reshape(V, h, w, 1, 3)
    return pts, torch.ones(V, h, w, 1, dtype=depth_m.dtype, device=depth_m.device)


class RenderedRGBLoss(WeightedLoss):
    """``forward(rgb (V, h, w, 3), target_rgb (V, h, w, 3), ray_valid (V, h, w) | None)`` ->
    mean over rays of ``ssim_weight * (1 - SSIM) / 2 + (1 - ssim_weight) * L1`` (SelfOcc
    ``RGBLossMS``; SSIM over the ray lattice)."""

    default_reads = {"rgb": "ray_rgb_rendered", "target_rgb": "ray_rgb", "ray_valid": "ray_valid"}
    optional_reads = frozenset({"ray_valid"})

    def __init__(self, weight: float = 0.1, enable_after: int = 0, reads=None, *, ssim_weight: float = 0.85):
        super().__init__(weight, enable_after, reads)
        self.ssim_weight = ssim_weight

    def forward(self, rgb: torch.Tensor, target_rgb: torch.Tensor, ray_valid: torch.Tensor | None = None):
        if rgb.shape != target_rgb.shape or rgb.dim() != 4 or rgb.shape[-1] != 3:
            raise ValueError(f"rgb and target_rgb must both be (V, h, w, 3), got {tuple(rgb.shape)} and "
                             f"{tuple(target_rgb.shape)}")
        dssim = ssim_dissimilarity(rgb.permute(0, 3, 1, 2), target_rgb.permute(0, 3, 1, 2)).mean(1)
        per_ray = self.ssim_weight * dssim + (1 - self.ssim_weight) * (rgb - target_rgb).abs().mean(-1)
        if ray_valid is None:
            return per_ray.mean()
        m = ray_valid.bool()
        return per_ray[m].mean() if m.any() else (per_ray * 0).sum()


class DepthConsistencyLoss(WeightedLoss):
    """Depth head taught by the renderer: ``forward(depth_head_m (...), rendered_depth_m (...),
    valid (...) | None)`` -> mean ``|log d_head - log d_render|`` with the render detached
    (the volume is not pulled towards the head). Depths are clamped to ``>= min_depth_m``."""

    default_reads = {"depth_head_m": "ray_depth_head_m", "rendered_depth_m": "ray_depth_m", "valid": "ray_valid"}
    optional_reads = frozenset({"valid"})

    def __init__(self, weight: float = 0.1, enable_after: int = 0, reads=None, *, min_depth_m: float = 0.1):
        super().__init__(weight, enable_after, reads)
        self.min_depth_m = min_depth_m

    def forward(self, depth_head_m: torch.Tensor, rendered_depth_m: torch.Tensor, valid: torch.Tensor | None = None):
        if depth_head_m.shape != rendered_depth_m.shape:
            raise ValueError(f"depth_head_m {tuple(depth_head_m.shape)} != rendered_depth_m "
                             f"{tuple(rendered_depth_m.shape)}")
        err = (torch.log(depth_head_m.clamp_min(self.min_depth_m))
               - torch.log(rendered_depth_m.detach().clamp_min(self.min_depth_m))).abs()
        m = torch.isfinite(rendered_depth_m)
        if valid is not None:
            m = m & valid.bool()
        return err[m].mean() if m.any() else (depth_head_m * 0).sum()
