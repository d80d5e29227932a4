"""Raw network outputs (:class:`ModelOutputs`, torch) and the subset every engine returns.

Frames and units: every volume is on the model's :class:`VoxelGridSpec` in the *current* base_link,
indexed ``(X, Y, Z)`` along base_link x (forward), y (left), z (up). Depths are optical-frame z in
metres; flow is the velocity of the voxel content in m/s along base_link axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mv4d_core.geometry.voxel_grid import VoxelGridSpec

#: What inference needs from a forward pass, in this order: the exported graph's outputs, the
#: torch engine's results and the one conversion to numpy (``mv4d_core.engines``) all use it.
INFERENCE_OUTPUTS: tuple[str, ...] = ("occupancy_prob", "flow_mps", "motion_prob", "depth_m", "state_volume")


@dataclass
class ModelOutputs:
    """Output of ``MV4DModel.forward``; B batch, N cameras, grid (X, Y, Z).

    * ``sdf`` (B, X, Y, Z) metres, > 0 free; ``occupancy_prob`` (B, X, Y, Z) = sigmoid((margin - sdf) * inv_s),
      >= 0.5 where sdf <= margin (``ModelConfig.occupancy_margin_m``, default half a voxel).
    * ``flow_mps`` (B, 3, X, Y, Z) m/s base_link; ``motion_prob`` (B, X, Y, Z) probability that the voxel
      content moves (the flow gate); ``rgb`` (B, 3, X, Y, Z) in [0, 1].
    * ``depth_m`` (B, N, h, w) optical depth: stride 4 of the model image for camera-only models (the
      expectation of the depth bins), the model image size with the LiDAR-guided depth head.
    * ``field`` (B, 4, X, Y, Z) the volume the renderer samples (channel 0 SDF, 1..3 colour).
    * ``state_volume`` (B, C_vol, X, Y, Z) lifted volume of this frame, to pass as the next frame's
      ``prev_volume``; ``inv_s`` () NeuS sharpness; ``grid`` the VoxelGridSpec.
    * ``depth_residual`` (B, N, H, W) log-depth change of the LiDAR-guided depth head against its
      classical base, or None (camera-only models).
    """

    sdf: torch.Tensor
    occupancy_prob: torch.Tensor
    flow_mps: torch.Tensor
    motion_prob: torch.Tensor
    rgb: torch.Tensor
    depth_m: torch.Tensor
    field: torch.Tensor
    state_volume: torch.Tensor
    inv_s: torch.Tensor
    grid: VoxelGridSpec
    depth_residual: torch.Tensor | None = None

    def inference_tensors(self) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` of :data:`INFERENCE_OUTPUTS` (batch first)."""
        return {name: getattr(self, name) for name in INFERENCE_OUTPUTS}


__all__ = ["INFERENCE_OUTPUTS", "ModelOutputs"]
