"""Raw network outputs (:class:`ModelOutputs`, torch) and the published, typed results
(:class:`PerceptionOutputs`, numpy) that the pipeline turns into ROS messages.

Frames and units: every volume is on the model's :class:`VoxelGridSpec` in the *current* base_link,
indexed ``(X, Y, Z)`` along base_link x (forward), y (left), z (up). Depths are optical-frame z in
metres; flow is the velocity of the voxel content in m/s along base_link axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mv4d_core.geometry.camera import unproject
from mv4d_core.geometry.transforms import transform_points
from mv4d_core.geometry.voxel_grid import VoxelGridSpec


@dataclass
class ModelOutputs:
    """Output of ``MV4DModel.forward``; B batch, N cameras, D depth bins, grid (X, Y, Z).

    * ``sdf`` (B, X, Y, Z) metres, > 0 free; ``occupancy_prob`` (B, X, Y, Z) = sigmoid((margin - sdf) * inv_s), >= 0.5 where sdf <= margin
      (``ModelConfig.occupancy_margin_m``, default half a voxel).
    * ``flow_mps`` (B, 3, X, Y, Z) m/s base_link; ``rgb`` (B, 3, X, Y, Z) in [0, 1];
      ``semantic_logits`` (B, K, X, Y, Z) or None; ``voxel_confidence_logit`` (B, X, Y, Z).
    * ``depth_m`` (B, N, h4, w4) expected optical depth at stride 4, K in ``depth_intrinsics`` (B, N, 3, 3);
      ``depth_prob4`` (B, N, D, h4, w4); ``depth_confidence_logit`` (B, N, h4, w4).
    * ``depth_prob`` (B, N, D, h8, w8) stride-8 distribution used for lifting; ``depth_bins_m`` (D,).
    * ``features`` (B, C_head, X, Y, Z) 3D-neck features; ``field`` (B, 1+3(+K), X, Y, Z) the volume the
      renderer samples (channel 0 SDF, 1..3 colour, then semantic logits).
    * ``state_volume`` (B, C_vol, X, Y, Z) lifted volume of this frame, to pass as the next frame's
      ``prev_volume``; ``inv_s`` () NeuS sharpness; ``grid`` the VoxelGridSpec.
    """

    sdf: torch.Tensor
    occupancy_prob: torch.Tensor
    flow_mps: torch.Tensor
    rgb: torch.Tensor
    semantic_logits: torch.Tensor | None
    voxel_confidence_logit: torch.Tensor
    depth_m: torch.Tensor
    depth_prob4: torch.Tensor
    depth_confidence_logit: torch.Tensor
    depth_intrinsics: torch.Tensor
    depth_prob: torch.Tensor
    depth_bins_m: torch.Tensor
    features: torch.Tensor
    field: torch.Tensor
    state_volume: torch.Tensor
    inv_s: torch.Tensor
    grid: VoxelGridSpec


def _free_label_default() -> int:
    try:
        from mv4d_core.data import classes  # owned by data-sources; optional at import time
        return int(getattr(classes, "FREE"))
    except Exception:  # noqa: BLE001 - module may not exist yet in a partial checkout
        return 255


@dataclass
class PerceptionOutputs:
    """Published results of one frame (numpy, batch element removed), in ``frame_id`` = base_link.

    * ``occupancy_prob`` (X, Y, Z) float32 in [0, 1], ``occupied`` (X, Y, Z) bool (prob >= threshold),
      ``occupancy_labels`` (X, Y, Z) uint8 class ids or None (non-occupied voxels get ``free_label``);
      ``grid`` the VoxelGridSpec.
    * ``depth_m`` (N, h, w) float32 optical-z metres per camera, ``depth_intrinsics`` (N, 3, 3) for that
      resolution, ``T_base_cam`` (N, 4, 4), ``camera_names``.
    * ``points_xyz`` (P, 3) float32 base_link metres unprojected from ``depth_m``, ``points_rgb`` (P, 3) uint8,
      ``points_camera`` (P,) int16 camera index.
    * ``flow_mps`` (X, Y, Z, 3) float32 m/s along base_link axes.
    """

    stamp_ns: int
    frame_id: str
    grid: VoxelGridSpec
    occupancy_prob: np.ndarray
    occupied: np.ndarray
    occupancy_labels: np.ndarray | None
    camera_names: list[str]
    depth_m: np.ndarray
    depth_intrinsics: np.ndarray
    T_base_cam: np.ndarray
    points_xyz: np.ndarray
    points_rgb: np.ndarray
    points_camera: np.ndarray
    flow_mps: np.ndarray

    @classmethod
    def from_model_outputs(cls, outputs: ModelOutputs, inputs, cfg, occupancy_threshold: float = 0.5,
                           batch_index: int = 0, stamp_ns: int = 0, camera_names: list[str] | None = None,
                           frame_id: str = "base_link", max_depth_m: float | None = None,
                           free_label: int | None = None) -> "PerceptionOutputs":
        """Convert batch element ``batch_index`` of ``outputs`` (for ``inputs``, a ModelInputs) to numpy.

        Point-cloud pixels with depth beyond ``max_depth_m`` (default ``cfg.depth.max_m``) are dropped.
        """
        b = batch_index
        with torch.no_grad():
            occ = outputs.occupancy_prob[b].detach().float().cpu().numpy()
            occupied = occ >= occupancy_threshold
            labels = None
            if outputs.semantic_logits is not None:
                fl = _free_label_default() if free_label is None else free_label
                labels = outputs.semantic_logits[b].argmax(0).cpu().numpy().astype(np.uint8)
                labels[~occupied] = fl
            depth = outputs.depth_m[b].detach().float()                       # (N, h, w)
            N, h, w = depth.shape
            Kd = outputs.depth_intrinsics[b].detach().double().cpu()
            T = inputs.T_base_cam[b].detach().double().cpu()
            rgb_small = F.interpolate(inputs.images[b].detach().float(), size=(h, w), mode="area")   # (N, 3, h, w)
            v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                  indexing="ij")
            uv = torch.stack([u, v], -1).reshape(-1, 2)
            d = depth.double().cpu().reshape(N, -1)
            pts = transform_points(T, unproject(Kd, uv, d))                    # (N, h*w, 3)
            limit = cfg.depth.max_m if max_depth_m is None else max_depth_m
            keep = torch.isfinite(d) & (d > 0) & (d <= limit)
            cam_idx = torch.arange(N)[:, None].expand(N, h * w)
            cols = (rgb_small.permute(0, 2, 3, 1).reshape(N, -1, 3).clamp(0, 1) * 255 + 0.5).to(torch.uint8)
            flow = outputs.flow_mps[b].detach().float().permute(1, 2, 3, 0).cpu().numpy()
        return cls(
            stamp_ns=int(stamp_ns), frame_id=frame_id, grid=outputs.grid,
            occupancy_prob=occ.astype(np.float32), occupied=occupied, occupancy_labels=labels,
            camera_names=list(camera_names) if camera_names is not None else [f"cam{i}" for i in range(N)],
            depth_m=depth.cpu().numpy().astype(np.float32), depth_intrinsics=Kd.numpy(),
            T_base_cam=T.numpy(), points_xyz=pts[keep].float().numpy(), points_rgb=cols[keep].cpu().numpy(),
            points_camera=cam_idx[keep].numpy().astype(np.int16), flow_mps=flow.astype(np.float32))


def depth_map_intrinsics(K: torch.Tensor, image_size: tuple[int, int], depth_size: tuple[int, int]) -> torch.Tensor:
    """K (..., 3, 3) for the model image ``(H, W)`` -> K for a depth map of ``(h, w)`` (same rule as
    :meth:`PinholeCamera.resized`: pixel centres follow ``u -> (u + 0.5) s - 0.5``)."""
    (H, W), (h, w) = image_size, depth_size
    sx, sy = w / W, h / H
    Kd = K.clone()
    Kd[..., 0, 0] = K[..., 0, 0] * sx
    Kd[..., 0, 1] = K[..., 0, 1] * sx
    Kd[..., 1, 1] = K[..., 1, 1] * sy
    Kd[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    Kd[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return Kd


__all__ = ["ModelOutputs", "PerceptionOutputs", "depth_map_intrinsics"]
