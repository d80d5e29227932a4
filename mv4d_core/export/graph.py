"""Export-friendly inference graph of :class:`MV4DModel` (same weights, same maths, static shapes).

:class:`InferenceGraph` wraps a trained ``MV4DModel`` and re-states its eval-mode ``forward`` with
positional tensor inputs and a fixed tuple of outputs, replacing the two parts of the training code
that do not trace into a clean ONNX graph (see ``onnx_export`` for the decisions and why):

* :func:`voxel_pool_static` — LSS voxel pooling without boolean indexing: every frustum point is
  scattered (one ``index_add`` -> ONNX ``ScatterND(reduction="add")``); points outside the grid go to a
  per-sample "dump" row that is sliced away, so all shapes depend on the config only.
* :func:`trilinear_sample_gather` — the temporal warp of the previous volume as 8 gathers + weights
  (``grid_sample`` on 5D inputs only exists from ONNX opset 20; mv4d exports opset 18), with the same
  ``align_corners=False`` / zero-padding semantics as ``F.grid_sample``.
* The "no previous frame" branch becomes data: input ``prev_valid`` (B,) float, 1 when
  ``prev_volume``/``T_prev_cur`` hold a real previous frame, 0 to run as the first frame of a sequence
  (the warped part and its mask are multiplied by it, which equals the model's ``prev_volume=None``
  path exactly).

Inputs (B batch, N cameras at the model size h x w; V = X*Y*Z):
``images`` (B, N, 3, h, w) float RGB 0..1, ``intrinsics`` (B, N, 3, 3), ``T_base_cam`` (B, N, 4, 4),
and with ``cfg.temporal``: ``prev_volume`` (B, C_vol, X, Y, Z), ``T_prev_cur`` (B, 4, 4),
``prev_valid`` (B,).

Outputs, in :data:`OUTPUT_NAMES` order (``semantic_logits`` last, only when the model has the head):
``occupancy_prob`` (B, X, Y, Z), ``sdf`` (B, X, Y, Z) m, ``flow_mps`` (B, 3, X, Y, Z),
``rgb`` (B, 3, X, Y, Z), ``voxel_confidence_logit`` (B, X, Y, Z), ``depth_m`` (B, N, h/4, w/4),
``depth_confidence_logit`` (B, N, h/4, w/4), ``state_volume`` (B, C_vol, X, Y, Z)
[, ``semantic_logits`` (B, K, X, Y, Z)].
"""

from __future__ import annotations

import torch
from torch import nn

from mv4d_core.geometry.transforms import transform_points
from mv4d_core.geometry.voxel_grid import VoxelGridSpec
from mv4d_core.models.heads import occupancy_from_sdf
from mv4d_core.models.lift import depth_distributions, frustum_points_base
from mv4d_core.models.temporal import grid_sample_coords, voxel_centers_torch

OUTPUT_NAMES: tuple[str, ...] = ("occupancy_prob", "sdf", "flow_mps", "rgb", "voxel_confidence_logit", "depth_m",
                                 "depth_confidence_logit", "state_volume")
SEMANTIC_OUTPUT = "semantic_logits"
BASE_INPUTS: tuple[str, ...] = ("images", "intrinsics", "T_base_cam")
TEMPORAL_INPUTS: tuple[str, ...] = ("prev_volume", "T_prev_cur", "prev_valid")


def input_names(temporal: bool) -> tuple[str, ...]:
    return BASE_INPUTS + (TEMPORAL_INPUTS if temporal else ())


def output_names(num_semantic_classes: int) -> tuple[str, ...]:
    return OUTPUT_NAMES + ((SEMANTIC_OUTPUT,) if num_semantic_classes > 0 else ())


def voxel_pool_static(values: torch.Tensor, points_base: torch.Tensor, grid: VoxelGridSpec) -> torch.Tensor:
    """Sum point features into voxels with shapes fixed by the grid (export-friendly ``voxel_pool``).

    ``values`` (B, P, C), ``points_base`` (B, P, 3) metres in base_link -> ``(B, C, X, Y, Z)``.
    Points outside the grid or non-finite land in row ``V`` of a ``(B, V + 1, C)`` accumulator,
    which is dropped; the voxel index rule (``floor((p - min) / size)``) is the training one.
    """
    B, P, C = values.shape
    X, Y, Z = grid.shape
    V = X * Y * Z
    lo = points_base.new_tensor(grid.range_min)
    vs = points_base.new_tensor(grid.voxel_size)
    dims = points_base.new_tensor((X, Y, Z))
    idx = torch.floor((points_base - lo) / vs)
    # NaN/inf fail both comparisons, so no IsInf/IsNaN ops are needed (TensorRT 8.x cannot parse IsInf).
    ok = (idx >= 0) & (idx < dims)
    inside = ok[..., 0] & ok[..., 1] & ok[..., 2]                                        # (B, P)
    idx = torch.where(inside[..., None], idx, torch.zeros_like(idx)).to(torch.int64)
    flat = (idx[..., 0] * Y + idx[..., 1]) * Z + idx[..., 2]
    flat = torch.where(inside, flat, torch.full_like(flat, V))
    flat = flat + torch.arange(B, device=flat.device, dtype=torch.int64)[:, None] * (V + 1)
    acc = values.new_zeros(B * (V + 1), C).index_add(0, flat.reshape(-1), values.reshape(-1, C))
    return acc.view(B, V + 1, C)[:, :V].reshape(B, X, Y, Z, C).permute(0, 4, 1, 2, 3)


def trilinear_sample_gather(volume: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample(volume, coords, mode="bilinear", padding_mode="zeros", align_corners=False)`` for
    5D inputs, written as gathers so it exports at opset < 20.

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


def warp_volume_gather(prev_volume: torch.Tensor, T_prev_cur: torch.Tensor, grid: VoxelGridSpec
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Export-friendly twin of ``models.temporal.warp_volume(..., return_valid=True)``:
    ``(warped (B, C, X, Y, Z), valid (B, 1, X, Y, Z))``."""
    B = prev_volume.shape[0]
    X, Y, Z = grid.shape
    centers = voxel_centers_torch(grid, prev_volume.device, prev_volume.dtype)
    pts_prev = transform_points(T_prev_cur.to(prev_volume.dtype), centers.reshape(1, -1, 3).expand(B, -1, -1))
    coords = grid_sample_coords(pts_prev, grid).reshape(B, X, Y, Z, 3)
    warped = trilinear_sample_gather(prev_volume, coords)
    ok = coords.abs() <= 1          # per-axis ANDs rather than all(): a ReduceMin over booleans in ONNX
    valid = (ok[..., 0] & ok[..., 1] & ok[..., 2]).unsqueeze(1).to(prev_volume.dtype)
    return warped, valid


class InferenceGraph(nn.Module):
    """Eval-mode ``MV4DModel`` as ``forward(*inputs) -> tuple`` (see the module docstring).

    Shares the wrapped model's parameters; puts it in eval mode (no MAE masking, no dropout).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.cfg = model.cfg
        self.temporal = model.temporal is not None
        self.eval()

    @property
    def input_names(self) -> tuple[str, ...]:
        return input_names(self.temporal)

    @property
    def output_names(self) -> tuple[str, ...]:
        return output_names(self.cfg.num_semantic_classes)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Images ``(B, N, 3, h, w)`` -> ``(depth_prob (B, N, D, h8, w8), context (B, N, C, h8, w8),
        depth_m (B, N, h4, w4), depth_confidence_logit (B, N, h4, w4))``: 2D backbone, neck, depth net."""
        m = self.model
        B, N, _, H, W = images.shape
        feat8, skip4 = m.neck(m.backbone(images.reshape(B * N, 3, H, W)))
        logits8, context, logits4, conf4 = m.depth_net(feat8, skip4)
        depth_prob, _, depth_m = depth_distributions(logits8, logits4, m.depth_bins_m, B, N)
        h8, w8 = logits8.shape[-2:]
        h4, w4 = logits4.shape[-2:]
        return depth_prob, context.reshape(B, N, -1, h8, w8), depth_m, conf4.reshape(B, N, h4, w4)

    def lift(self, depth_prob: torch.Tensor, context: torch.Tensor, intrinsics: torch.Tensor,
             T_base_cam: torch.Tensor) -> torch.Tensor:
        """LSS lift with the training geometry, pooled with static shapes -> volume ``(B, C, X, Y, Z)``."""
        m = self.model
        B, N, D, h8, w8 = depth_prob.shape
        C = context.shape[2]
        pts = frustum_points_base(intrinsics, T_base_cam, h8, w8, m.lift.stride, m.lift.depths_m)
        vals = (depth_prob.unsqueeze(3) * context.unsqueeze(2)).permute(0, 1, 2, 4, 5, 3).reshape(B, N * D * h8 * w8, C)
        return voxel_pool_static(vals, pts.reshape(B, -1, 3).to(vals.dtype), self.cfg.grid)

    def decode(self, volume: torch.Tensor, prev_volume: torch.Tensor | None = None,
               T_prev_cur: torch.Tensor | None = None, prev_valid: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, ...]:
        """Temporal fusion + 3D neck + voxel heads -> ``(occupancy_prob, sdf, flow_mps, rgb,
        voxel_confidence_logit[, semantic_logits])``."""
        m = self.model
        fused = volume
        if self.temporal:
            if prev_volume is None or T_prev_cur is None or prev_valid is None:
                raise ValueError("temporal model: give prev_volume, T_prev_cur and prev_valid "
                                 "(zeros, identity and 0 for the first frame)")
            gate = prev_valid.to(volume.dtype).reshape(-1, 1, 1, 1, 1)
            warped, valid = warp_volume_gather(prev_volume, T_prev_cur, self.cfg.grid)
            fused = m.temporal.fuse(torch.cat([volume, warped * gate, valid * gate], 1))
        heads = m.heads(m.neck3d(fused))
        sdf = heads["sdf"]
        outs = (occupancy_from_sdf(sdf, m.sharpness(), m.cfg.occupancy_margin_m), sdf, heads["flow_mps"], heads["rgb"],
                heads["confidence_logit"])
        if "semantic_logits" in heads:
            outs = outs + (heads["semantic_logits"],)
        return outs

    def forward(self, images: torch.Tensor, intrinsics: torch.Tensor, T_base_cam: torch.Tensor,
                prev_volume: torch.Tensor | None = None, T_prev_cur: torch.Tensor | None = None,
                prev_valid: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        depth_prob, context, depth_m, conf4 = self.encode(images)
        volume = self.lift(depth_prob, context, intrinsics, T_base_cam)
        voxel = self.decode(volume, prev_volume, T_prev_cur, prev_valid)
        return voxel[:5] + (depth_m, conf4, volume) + voxel[5:]


def example_inputs(cfg, batch: int = 1, seed: int = 0, temporal_prev: bool = False) -> tuple[torch.Tensor, ...]:
    """Deterministic inputs for tracing/tests: random images, a ring of ``cfg.num_cameras`` cameras
    looking outwards 1.5 m above base_link, and (temporal) a previous volume with a 1 m forward move."""
    import math

    gen = torch.Generator().manual_seed(seed)
    N, H, W = cfg.num_cameras, cfg.image_height, cfg.image_width
    images = torch.rand(batch, N, 3, H, W, generator=gen)
    f = 0.5 * W / math.tan(math.radians(70.0) / 2)
    K = torch.tensor([[f, 0.0, (W - 1) / 2], [0.0, f, (H - 1) / 2], [0.0, 0.0, 1.0]])
    # optical (z fwd, x right, y down) -> body (x fwd, y left, z up), then yaw around the ring.
    R_body_opt = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    Ts = []
    for i in range(N):
        yaw = 2 * math.pi * i / N
        c, s = math.cos(yaw), math.sin(yaw)
        T = torch.eye(4)
        T[:3, :3] = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ R_body_opt
        T[:3, 3] = torch.tensor([0.5 * c, 0.5 * s, 1.5])
        Ts.append(T)
    intrinsics = K.expand(batch, N, 3, 3).clone()
    T_base_cam = torch.stack(Ts).expand(batch, N, 4, 4).clone()
    if not cfg.temporal:
        return images, intrinsics, T_base_cam
    X, Y, Z = cfg.grid.shape
    prev = torch.rand(batch, cfg.volume_channels, X, Y, Z, generator=gen) if temporal_prev else \
        torch.zeros(batch, cfg.volume_channels, X, Y, Z)
    T_prev_cur = torch.eye(4).expand(batch, 4, 4).clone()
    if temporal_prev:
        T_prev_cur[:, 0, 3] = 1.0
        T_prev_cur[:, 1, 3] = 0.3
    prev_valid = torch.full((batch,), 1.0 if temporal_prev else 0.0)
    return images, intrinsics, T_base_cam, prev, T_prev_cur, prev_valid
