"""Temporal photometric loss through the volume (SelfOcc ``ReprojLossMonoMultiNewCombine`` form).

Every render sample ``x_i`` of a ray cast in the current frame is projected into the adjacent
frames (same camera, known ego motion), its colour looked up bilinearly, and the per-sample
errors are combined with the normalised render weights. Per ray:
``0.85 * (1 - SSIM) / 2 + 0.15 * L1``, with SSIM taken over the ray lattice between the
weight-combined warped colour and the current colour. Auto-masking keeps, per ray, the
minimum over {combined, identity(adjacent frame) for each adjacent frame}; rays without a
valid projection get :data:`INVALID_COST` before the minimum. The flow-aware variant first
moves every sample by its predicted displacement ``x_i + f_i * dt`` (object motion, expressed
in the current ``base_link``) before the ego transform.

Shapes (``V`` views = batch x cameras flattened, ``h x w`` ray lattice, ``S`` samples per ray,
``A`` adjacent frames, adjacent images ``H x W``):

* ``points_base`` ``(V, h, w, S, 3)`` sample positions in the current ``base_link``, metres.
* ``weights`` ``(V, h, w, S)`` render weights (need not sum to one).
* ``target_rgb`` ``(V, h, w, 3)`` current colours at the rays, in [0, 1].
* ``ray_uv`` ``(V, h, w, 2)`` ray pixels in adjacent-image pixel units (for the identity term).
* ``adj_images`` ``(A, V, 3, H, W)`` adjacent images in [0, 1].
* ``K`` ``(V, 3, 3)`` intrinsics of the adjacent images; ``T_base_cam`` ``(V, 4, 4)`` optical->base.
* ``T_adj_cur`` ``(A, V, 4, 4)`` or ``(A, 4, 4)``: current ``base_link`` -> adjacent ``base_link``
  (``inv(T_world_base_adj) @ T_world_base_cur``).
* optional ``flow_mps`` ``(V, h, w, S, 3)`` with ``dt_s`` ``(A,)`` (signed ``t_adj - t_cur``), or
  ``displacement_m`` ``(A, V, h, w, S, 3)`` per adjacent frame.
* optional ``ray_valid`` ``(V, h, w)`` bool: rays to leave out of the loss (padding, ego body).

SSIM needs a lattice with ``h, w >= 2``; with ``ssim_weight=0`` the loss is pure L1 and any ray
layout works (e.g. ``(V, 1, M)`` rays at LiDAR pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mv4d_core.geometry.camera import project
from mv4d_core.geometry.transforms import invert_transform, transform_points
from mv4d_core.losses.base import WeightedLoss
from mv4d_core.losses.ssim import ssim_dissimilarity

#: Cost given to rays without any valid projection, before the auto-mask minimum (SelfOcc).
INVALID_COST = 1e3


def sample_images(images: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear colour lookup.

    Args:
        images: ``(V, C, H, W)``.
        uv: ``(V, ..., 2)`` pixel coordinates (pixel centres at integers); NaN allowed.
    Returns:
        ``(colours (V, ..., C), inside (V, ...) bool)``; outside/NaN pixels give border colours
        and ``inside=False``.
    """
    V, C, H, W = images.shape
    lead = uv.shape[1:-1]
    flat = uv.reshape(V, 1, -1, 2)
    finite = torch.isfinite(flat).all(-1)
    flat = torch.where(finite[..., None], flat, torch.zeros_like(flat))
    u, v = flat[..., 0], flat[..., 1]
    inside = finite & (u >= -0.5) & (u < W - 0.5) & (v >= -0.5) & (v < H - 0.5)
    # align_corners=True puts -1/+1 on the centres of the outer pixels, matching integer centres.
    grid = torch.stack([2 * u / max(W - 1, 1) - 1, 2 * v / max(H - 1, 1) - 1], -1)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)
    colours = out[:, :, 0].permute(0, 2, 1).reshape(V, *lead, C)
    return colours, inside.reshape(V, *lead)


@dataclass
class PhotometricTerms:
    """Per-ray pieces of the loss (all ``(V, h, w)`` unless noted) for logging and tests."""

    per_ray: torch.Tensor          #: auto-masked per-ray loss (``INVALID_COST`` where nothing is valid)
    combined: torch.Tensor         #: reprojection loss through the volume
    identity: torch.Tensor | None  #: ``(A, V, h, w)`` identity losses, or None without ``ray_uv``
    valid: torch.Tensor            #: rays with a valid reprojection
    identity_wins: torch.Tensor    #: rays where an identity term is the minimum (static / textureless)
    warped_rgb: torch.Tensor       #: ``(V, h, w, 3)`` weight-combined warped colour


def _broadcast_T(T: torch.Tensor, A: int, V: int, name: str) -> torch.Tensor:
    if T.shape == (A, 4, 4):
        return T[:, None].expand(A, V, 4, 4)
    if T.shape != (A, V, 4, 4):
        raise ValueError(f"{name} must be (A={A}, V={V}, 4, 4) or (A, 4, 4), got {tuple(T.shape)}")
    return T


def photometric_terms(points_base, weights, target_rgb, adj_images, K, T_base_cam, T_adj_cur,
                      ray_uv=None, flow_mps=None, dt_s=None, displacement_m=None,
                      ssim_weight: float = 0.85, min_valid_fraction: float = 0.5,
                      automask: bool = True) -> PhotometricTerms:
    """Compute the per-ray photometric terms; see the module docstring for shapes."""
    if points_base.dim() != 5 or points_base.shape[-1] != 3:
        raise ValueError(f"points_base must be (V, h, w, S, 3), got {tuple(points_base.shape)}")
    V, h, w, S, _ = points_base.shape
    if weights.shape != (V, h, w, S):
        raise ValueError(f"weights must be {(V, h, w, S)}, got {tuple(weights.shape)}")
    if target_rgb.shape != (V, h, w, 3):
        raise ValueError(f"target_rgb must be {(V, h, w, 3)}, got {tuple(target_rgb.shape)}")
    if isinstance(adj_images, (list, tuple)):
        adj_images = torch.stack(list(adj_images))
    if adj_images.dim() != 5 or adj_images.shape[1] != V:
        raise ValueError(f"adj_images must be (A, V={V}, 3, H, W), got {tuple(adj_images.shape)}")
    A, _, _, H, W = adj_images.shape
    if isinstance(T_adj_cur, (list, tuple)):
        T_adj_cur = torch.stack(list(T_adj_cur))
    T_adj_cur = _broadcast_T(T_adj_cur.to(points_base), A, V, "T_adj_cur")
    if flow_mps is not None and displacement_m is not None:
        raise ValueError("give flow_mps (+dt_s) or displacement_m, not both")
    if flow_mps is not None:
        if dt_s is None:
            raise ValueError("flow_mps needs dt_s (A,) seconds from the current to each adjacent frame")
        dt = torch.as_tensor(dt_s, dtype=points_base.dtype, device=points_base.device).reshape(A)
        displacement_m = dt.reshape(A, 1, 1, 1, 1, 1) * flow_mps[None]
    if displacement_m is not None and displacement_m.shape != (A, V, h, w, S, 3):
        raise ValueError(f"displacement_m must be {(A, V, h, w, S, 3)}, got {tuple(displacement_m.shape)}")

    T_cam_base = invert_transform(T_base_cam.to(points_base))
    K = K.to(points_base)
    pts = points_base.reshape(V, -1, 3)
    cols, masks = [], []
    for a in range(A):
        p = pts if displacement_m is None else pts + displacement_m[a].reshape(V, -1, 3)
        p_cam = transform_points(T_cam_base, transform_points(T_adj_cur[a], p))
        uv, _, in_front = project(K, p_cam, W, H)
        col, inside = sample_images(adj_images[a], uv)
        cols.append(col)
        masks.append(in_front & inside)
    cols_t = torch.stack(cols).reshape(A, V, h, w, S, 3)
    m = torch.stack(masks).reshape(A, V, h, w, S).to(points_base.dtype)

    # Per-sample L1 averaged over the sources where the sample projects validly.
    n_src = m.sum(0)
    has_src = n_src > 0
    l1_src = (cols_t - target_rgb[None, :, :, :, None, :]).abs().mean(-1)
    l1_sample = (m * l1_src).sum(0) / n_src.clamp_min(1)
    col_sample = (m[..., None] * cols_t).sum(0) / n_src.clamp_min(1)[..., None]

    w_norm = weights / weights.sum(-1, keepdim=True).clamp_min(1e-8)
    w_valid = w_norm * has_src
    valid_mass = w_valid.sum(-1)
    valid = valid_mass >= min_valid_fraction
    denom = valid_mass.clamp_min(1e-8)
    l1_ray = (w_valid * l1_sample).sum(-1) / denom
    warped = (w_valid[..., None] * col_sample).sum(-2) / denom[..., None]
    # Invalid rays take the current colour so they do not disturb their neighbours' SSIM.
    warped = torch.where(valid[..., None], warped, target_rgb)

    def per_ray(img):  # (V, h, w, 3) -> (V, h, w)
        l1 = (img - target_rgb).abs().mean(-1)
        if ssim_weight == 0:  # pure L1: also works for unstructured rays, e.g. (V, 1, M) at LiDAR pixels
            return torch.zeros_like(l1), l1
        dssim = ssim_dissimilarity(img.permute(0, 3, 1, 2), target_rgb.permute(0, 3, 1, 2)).mean(1)
        return ssim_weight * dssim, l1

    dssim_c, _ = per_ray(warped)
    combined = dssim_c + (1 - ssim_weight) * l1_ray
    combined = torch.where(valid, combined, torch.full_like(combined, INVALID_COST))

    identity = None
    candidates = [combined]
    if ray_uv is not None:
        if ray_uv.shape != (V, h, w, 2):
            raise ValueError(f"ray_uv must be {(V, h, w, 2)}, got {tuple(ray_uv.shape)}")
        ids = []
        for a in range(A):
            col, inside = sample_images(adj_images[a], ray_uv.to(points_base))
            d, l1 = per_ray(col)
            ids.append(torch.where(inside, d + (1 - ssim_weight) * l1, torch.full_like(l1, INVALID_COST)))
        identity = torch.stack(ids)
        if automask:
            candidates += list(identity)
    stacked = torch.stack(candidates)
    per_ray_loss, which = stacked.min(0)
    return PhotometricTerms(per_ray=per_ray_loss, combined=combined, identity=identity, valid=valid,
                            identity_wins=which > 0, warped_rgb=warped)


class PhotometricLoss(WeightedLoss):
    """Temporal photometric reprojection loss through the volume (SelfOcc), optionally flow-aware.

    ``forward(points_base, weights, target_rgb, adj_images, K, T_base_cam, T_adj_cur,
    ray_uv=None, flow_mps=None, dt_s=None, ray_valid=None)`` -> scalar: mean auto-masked per-ray
    loss over the ``ray_valid`` rays whose minimum is a real value (rays with
    :data:`INVALID_COST` everywhere are left out).
    Shapes as in the module docstring. ``use_flow=True`` reads ``flow_mps``/``dt_s``.
    """

    default_reads = {
        "points_base": "ray_points_base", "weights": "ray_weights", "target_rgb": "ray_rgb",
        "adj_images": "adj_images", "K": "adj_intrinsics", "T_base_cam": "T_base_cam",
        "T_adj_cur": "T_adj_cur", "ray_uv": "ray_uv", "flow_mps": "ray_flow_mps", "dt_s": "adj_dt_s",
        "ray_valid": "ray_valid",
    }
    optional_reads = frozenset({"ray_uv", "flow_mps", "dt_s", "ray_valid"})

    def __init__(self, weight: float = 1.0, enable_after: int = 0, reads=None, *, ssim_weight: float = 0.85,
                 min_valid_fraction: float = 0.5, automask: bool = True, use_flow: bool = False):
        super().__init__(weight, enable_after, reads)
        self.ssim_weight = ssim_weight
        self.min_valid_fraction = min_valid_fraction
        self.automask = automask
        self.use_flow = use_flow
        if not use_flow:  # do not demand flow keys from the batch when the variant is off
            self.reads.pop("flow_mps")
            self.reads.pop("dt_s")

    def terms(self, points_base, weights, target_rgb, adj_images, K, T_base_cam, T_adj_cur,
              ray_uv=None, flow_mps=None, dt_s=None) -> PhotometricTerms:
        if self.use_flow and flow_mps is None:
            raise ValueError("PhotometricLoss(use_flow=True) needs flow_mps (V, h, w, S, 3) and dt_s (A,)")
        return photometric_terms(points_base, weights, target_rgb, adj_images, K, T_base_cam, T_adj_cur,
                                 ray_uv=ray_uv, flow_mps=flow_mps if self.use_flow else None,
                                 dt_s=dt_s, ssim_weight=self.ssim_weight,
                                 min_valid_fraction=self.min_valid_fraction, automask=self.automask)

    def forward(self, points_base, weights, target_rgb, adj_images, K, T_base_cam, T_adj_cur,
                ray_uv=None, flow_mps=None, dt_s=None, ray_valid=None) -> torch.Tensor:
        t = self.terms(points_base, weights, target_rgb, adj_images, K, T_base_cam, T_adj_cur,
                       ray_uv, flow_mps, dt_s)
        keep = t.per_ray < INVALID_COST
        if ray_valid is not None:
            if ray_valid.shape != keep.shape:
                raise ValueError(f"ray_valid must be {tuple(keep.shape)}, got {tuple(ray_valid.shape)}")
            keep = keep & ray_valid.bool()
        if not keep.any():
            return (t.per_ray * 0).sum()
        return t.per_ray[keep].mean()
