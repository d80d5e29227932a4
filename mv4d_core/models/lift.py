"""LSS lifting: categorical depth per feature pixel, outer product with context features, voxel pooling.

Frames: frustum points are built in each camera's optical frame from ``K`` (model image size) and
moved to base_link with ``T_base_cam``; the volume is the :class:`VoxelGridSpec` in base_link,
shaped ``(B, C, X, Y, Z)``. Depths are optical z in metres.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mv4d_core.geometry.camera import unproject
from mv4d_core.geometry.transforms import transform_points
from mv4d_core.geometry.voxel_grid import VoxelGridSpec
from mv4d_core.models.backbone import norm2d
from mv4d_core.models.config import DepthConfig


def depth_bin_centers(cfg: DepthConfig, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(D,)`` bin centres ``linspace(min_m, max_m, num_bins)`` in metres."""
    return torch.linspace(cfg.min_m, cfg.max_m, cfg.num_bins, device=device, dtype=dtype)


def depth_distributions(logits8: torch.Tensor, logits4: torch.Tensor, depth_bins_m: torch.Tensor, batch: int,
                        num_cameras: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`DepthNet` logits of the ``B*N`` images (``(B*N, D, h8, w8)`` and ``(B*N, D, h4, w4)``) ->
    ``(depth_prob (B, N, D, h8, w8), depth_m (B, N, h4, w4))``: softmax over the ``D`` bins; metric
    depth is the expectation of the stride-4 distribution over the bin centres ``depth_bins_m`` (D,)."""
    D = depth_bins_m.shape[0]
    h8, w8 = logits8.shape[-2:]
    h4, w4 = logits4.shape[-2:]
    depth_prob = logits8.softmax(1).reshape(batch, num_cameras, D, h8, w8)
    depth_prob4 = logits4.softmax(1).reshape(batch, num_cameras, D, h4, w4)
    return depth_prob, (depth_prob4 * depth_bins_m.reshape(1, 1, D, 1, 1)).sum(2)


def feature_pixel_centers(height: int, width: int, stride: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(height, width, 2)`` image-pixel ``(u, v)`` of the centres of a stride-``stride`` feature map
    (feature cell ``j`` covers image pixels ``[j s, (j+1) s)`` so its centre is ``(j + 0.5) s - 0.5``)."""
    v = (torch.arange(height, device=device, dtype=dtype) + 0.5) * stride - 0.5
    u = (torch.arange(width, device=device, dtype=dtype) + 0.5) * stride - 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], -1)


def frustum_points_base(K: torch.Tensor, T_base_cam: torch.Tensor, height: int, width: int, stride: int,
                        depths_m: torch.Tensor) -> torch.Tensor:
    """Frustum of every (depth bin, feature pixel) in base_link metres.

    ``K`` (B, N, 3, 3) for the model image size, ``T_base_cam`` (B, N, 4, 4), ``depths_m`` (D,)
    -> ``(B, N, D, height, width, 3)``.
    """
    B, N = K.shape[:2]
    D = depths_m.shape[0]
    uv = feature_pixel_centers(height, width, stride, K.device, K.dtype).reshape(1, -1, 2)
    uv = uv.expand(D, -1, -1).reshape(-1, 2)                                   # (D*h*w, 2)
    z = depths_m.to(K.dtype)[:, None].expand(D, height * width).reshape(-1)    # (D*h*w,)
    pts_cam = unproject(K, uv, z.expand(B, N, -1))                             # (B, N, D*h*w, 3)
    pts_base = transform_points(T_base_cam.to(K.dtype), pts_cam)
    return pts_base.reshape(B, N, D, height, width, 3)


def voxel_pool(values: torch.Tensor, points_base: torch.Tensor, grid: VoxelGridSpec) -> torch.Tensor:
    """Sum point features into voxels.

    ``values`` (B, P, C) and ``points_base`` (B, P, 3) metres in base_link -> ``(B, C, X, Y, Z)``.
    Every point is scattered with one ``index_add`` (ONNX ``ScatterND(reduction="add")``): points
    outside the grid or non-finite go to a per-sample dump row that is sliced away, so no shape
    depends on the data and the same code trains, runs and exports. Deterministic on CPU (atomic
    adds on CUDA); gradients flow to ``values`` only (indices are piecewise constant).
    """
    B, P, C = values.shape
    X, Y, Z = grid.shape
    V = X * Y * Z
    with torch.no_grad():
        lo = points_base.new_tensor(grid.range_min)
        vs = points_base.new_tensor(grid.voxel_size)
        dims = points_base.new_tensor((X, Y, Z))
        idx = torch.floor((points_base - lo) / vs)
        # NaN/inf fail both comparisons, so no IsInf/IsNaN ops are exported (TensorRT 8.x cannot parse
        # IsInf), and per-axis ANDs avoid a ReduceMin over booleans.
        ok = (idx >= 0) & (idx < dims)
        inside = ok[..., 0] & ok[..., 1] & ok[..., 2]                                    # (B, P)
        idx = torch.where(inside[..., None], idx, torch.zeros_like(idx)).to(torch.int64)
        flat = (idx[..., 0] * Y + idx[..., 1]) * Z + idx[..., 2]
        flat = torch.where(inside, flat, torch.full_like(flat, V))
        flat = flat + torch.arange(B, device=flat.device, dtype=torch.int64)[:, None] * (V + 1)
    acc = values.new_zeros(B * (V + 1), C).index_add(0, flat.reshape(-1), values.reshape(-1, C))
    return acc.view(B, V + 1, C)[:, :V].reshape(B, X, Y, Z, C).permute(0, 4, 1, 2, 3).contiguous()


class DepthNet(nn.Module):
    """Stride-8 features -> depth logits (D) + context (C); stride-4 refinement -> depth logits.

    The refinement adds a residual (zero-initialised, so training starts from the upsampled
    stride-8 distribution) computed from the stride-4 skip.
    """

    def __init__(self, in_channels: int, skip_channels: int, num_bins: int, context_channels: int,
                 groups: int) -> None:
        super().__init__()
        self.num_bins = num_bins
        self.trunk = nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, 1, 1, bias=False),
                                   norm2d(in_channels, groups), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(in_channels, num_bins + context_channels, 1)
        self.refine = nn.Sequential(nn.Conv2d(skip_channels + in_channels, skip_channels, 3, 1, 1, bias=False),
                                    norm2d(skip_channels, groups), nn.ReLU(inplace=True),
                                    nn.Conv2d(skip_channels, num_bins, 1))
        nn.init.zeros_(self.refine[-1].weight)
        nn.init.zeros_(self.refine[-1].bias)

    def forward(self, feat8: torch.Tensor, skip4: torch.Tensor):
        """-> (depth logits (B, D, h8, w8), context (B, C, h8, w8), logits4 (B, D, h4, w4))."""
        y = self.trunk(feat8)
        out = self.out(y)
        logits8, context = out[:, : self.num_bins], out[:, self.num_bins:]
        up = F.interpolate(y, size=skip4.shape[-2:], mode="bilinear", align_corners=False)
        res = self.refine(torch.cat([skip4, up], 1))
        logits4 = F.interpolate(logits8, size=skip4.shape[-2:], mode="bilinear", align_corners=False)
        return logits8, context, logits4 + res


class LSSLift(nn.Module):
    """Lift-splat: depth distribution x context at every feature pixel, pooled into the base_link grid."""

    def __init__(self, grid: VoxelGridSpec, depth: DepthConfig, stride: int) -> None:
        super().__init__()
        self.grid = grid
        self.stride = stride
        self.register_buffer("depths_m", depth_bin_centers(depth), persistent=False)

    def forward(self, depth_prob: torch.Tensor, context: torch.Tensor, K: torch.Tensor,
                T_base_cam: torch.Tensor) -> torch.Tensor:
        """``depth_prob`` (B, N, D, h, w), ``context`` (B, N, C, h, w) -> volume ``(B, C, X, Y, Z)``."""
        B, N, D, h, w = depth_prob.shape
        C = context.shape[2]
        pts = frustum_points_base(K, T_base_cam, h, w, self.stride, self.depths_m)     # (B,N,D,h,w,3)
        vals = depth_prob.unsqueeze(3) * context.unsqueeze(2)                          # (B,N,D,C,h,w)
        vals = vals.permute(0, 1, 2, 4, 5, 3).reshape(B, N * D * h * w, C)
        return voxel_pool(vals, pts.reshape(B, -1, 3).to(vals.dtype), self.grid)
