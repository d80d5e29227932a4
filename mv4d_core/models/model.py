"""The mv4d network: shared 2D encoder -> LSS lift -> temporal fusion -> 3D neck -> voxel heads.

``forward`` is the one forward pass: training, the torch engine and the exported ONNX graph all run
it. With ``cfg.lidar.enabled`` a LiDAR branch (:mod:`mv4d_core.models.lidar_branch`) adds the LiDAR
volume before the 3D neck and publishes depth at the model image size. It has no data-dependent Python branches (the first frame of a sequence is ``prev_valid = 0``,
voxel pooling scatters into a dump row, the temporal warp uses gathers while exporting), so
``mv4d_core.export`` only wraps it.
"""

from __future__ import annotations

import torch
from torch import nn

from mv4d_core.models.backbone import ResNetBackbone, random_patch_mask
from mv4d_core.models.config import ModelConfig
from mv4d_core.models.heads import Neck3D, VoxelHeads, occupancy_from_sdf
from mv4d_core.models.inputs import ModelInputs
from mv4d_core.models.lidar_branch import DepthRefiner, LidarEncoder
from mv4d_core.models.lidar_inputs import volume_channels
from mv4d_core.models.lift import DepthNet, LSSLift, depth_bin_centers, depth_distributions
from mv4d_core.models.neck import FPNNeck
from mv4d_core.models.outputs import ModelOutputs
from mv4d_core.models.temporal import TemporalFusion
from mv4d_core.render.alpha import Sharpness


class MV4DModel(nn.Module):
    """``forward(ModelInputs) -> ModelOutputs``. See :class:`ModelOutputs` for shapes, frames and units."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        bb = cfg.backbone
        self.backbone = ResNetBackbone(bb)
        skip_ch = max(16, bb.stage_channels[0] // 2)
        self.neck = FPNNeck(self.backbone.out_channels, cfg.neck_channels, skip_ch, bb.norm_groups)
        self.depth_net = DepthNet(cfg.neck_channels, skip_ch, cfg.depth.num_bins, cfg.volume_channels, bb.norm_groups)
        self.lift = LSSLift(cfg.grid, cfg.depth, cfg.feature_stride)
        self.temporal = TemporalFusion(cfg.volume_channels, cfg.grid) if cfg.temporal else None
        lc = cfg.lidar
        self.lidar_encoder = (LidarEncoder(volume_channels(lc.previous_sweeps), lc.encoder_channels, lc.encoder_layers)
                              if lc.enabled else None)
        self.depth_refiner = (DepthRefiner(lc.refine_channels, support_px=lc.refine_support_px)
                              if lc.enabled and lc.depth_refine else None)
        neck_in = cfg.volume_channels + (lc.encoder_channels if lc.enabled else 0)
        self.neck3d = Neck3D(neck_in, cfg.head_channels, cfg.neck3d_layers)
        self.heads = VoxelHeads(cfg.head_channels, cfg.grid, cfg.ground_z_m, cfg.flow_gate)
        self.sharpness = Sharpness(cfg.sharpness_init, cfg.sharpness_min_inv_s)
        self.register_buffer("depth_bins_m", depth_bin_centers(cfg.depth), persistent=False)
        #: Optional generator for reproducible MAE masks (tests/benchmarks).
        self.mask_generator: torch.Generator | None = None

    # ------------------------------------------------------------------ stages
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images ``(B, N, 3, H, W)`` -> ``(depth_prob (B, N, D, h8, w8), context (B, N, C, h8, w8),
        depth_m (B, N, h4, w4))``: 2D backbone, neck and depth net (MAE masking when training)."""
        B, N, _, H, W = images.shape
        x = images.reshape(B * N, 3, H, W)
        m = self.cfg.masking
        if self.training and m.enabled and m.ratio > 0:
            keep = random_patch_mask(x.shape[0], H, W, m.patch_size, m.ratio, self.mask_generator, x.device)
            x = x * keep
        feat8, skip4 = self.neck(self.backbone(x))
        logits8, context, logits4 = self.depth_net(feat8, skip4)
        depth_prob, depth_m = depth_distributions(logits8, logits4, self.depth_bins_m, B, N)
        h8, w8 = logits8.shape[-2:]
        return depth_prob, context.reshape(B, N, context.shape[1], h8, w8), depth_m

    def fuse_previous(self, volume: torch.Tensor, inputs: ModelInputs) -> torch.Tensor:
        """Temporal fusion of the ego-warped previous volume (zeros with ``prev_valid = 0`` when the
        inputs carry no previous frame); identity for a model built with ``temporal=False``."""
        if self.temporal is None:
            return volume
        prev, T, valid = inputs.prev_volume, inputs.T_prev_cur, inputs.prev_valid
        if prev is None:  # structural (which inputs exist), never a branch on tensor values
            B = volume.shape[0]
            prev = torch.zeros_like(volume)
            T = torch.eye(4, dtype=volume.dtype, device=volume.device).expand(B, 4, 4)
            valid = volume.new_zeros(B)
        return self.temporal(volume, prev, T, valid)

    def lidar_inputs(self, inputs: ModelInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(lidar_volume, lidar_depth, lidar_valid)``; zeros with ``lidar_valid = 0`` when the inputs
        carry none (a camera-only sample for a fusion model)."""
        if inputs.lidar_volume is not None:
            return inputs.lidar_volume, inputs.lidar_depth, inputs.lidar_valid
        cfg = self.cfg
        B, N, _, H, W = inputs.images.shape
        ref = inputs.images
        vol = ref.new_zeros(B, volume_channels(cfg.lidar.previous_sweeps), *cfg.grid.shape)
        return vol, ref.new_zeros(B, N, 3, H, W), ref.new_zeros(B)

    def decode(self, fused: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """3D neck + voxel heads -> (``{"sdf", "rgb", "flow_mps"}``, NeuS sharpness ``inv_s``)."""
        return self.heads(self.neck3d(fused)), self.sharpness()

    # ------------------------------------------------------------------ forward
    def forward(self, inputs: ModelInputs) -> ModelOutputs:
        cfg = self.cfg
        H, W = inputs.image_size
        if (H, W) != (cfg.image_height, cfg.image_width):
            raise ValueError(f"ModelInputs.images are {H}x{W} but the model expects "
                             f"{cfg.image_height}x{cfg.image_width}; resize with models.inputs.resize_cameras")
        depth_prob, context, depth_m = self.encode(inputs.images)
        volume = self.lift(depth_prob, context, inputs.intrinsics, inputs.T_base_cam)
        fused = self.fuse_previous(volume, inputs)
        residual = hits = None
        if self.lidar_encoder is not None:
            lidar_volume, lidar_depth, lidar_valid = self.lidar_inputs(inputs)
            fused = torch.cat([fused, self.lidar_encoder(lidar_volume, lidar_valid)], 1)
            if cfg.lidar.hits_occupied:
                # channel 0 = log(1 + returns of the current sweep) per voxel
                hits = (lidar_volume[:, 0] > 0).to(lidar_volume.dtype) * lidar_valid.to(lidar_volume.dtype).reshape(-1, 1, 1, 1)
            if self.depth_refiner is not None:
                depth_m, residual = self.depth_refiner(inputs.images, lidar_depth, depth_m, lidar_valid)
        heads, inv_s = self.decode(fused)
        sdf = heads["sdf"]
        occupancy = occupancy_from_sdf(sdf, inv_s, cfg.occupancy_margin_m)
        if hits is not None:
            occupancy = torch.maximum(occupancy, hits)
        return ModelOutputs(
            sdf=sdf, occupancy_prob=occupancy,
            flow_mps=heads["flow_mps"], motion_prob=heads["motion_prob"], rgb=heads["rgb"], depth_m=depth_m,
            field=torch.cat([sdf.unsqueeze(1), heads["rgb"]], 1), state_volume=volume, inv_s=inv_s, grid=cfg.grid,
            depth_residual=residual)


def build_model(cfg: ModelConfig | str = "tiny") -> MV4DModel:
    """Build the network for a :class:`ModelConfig` (or a preset name, ``"tiny"``/``"base"``)."""
    if isinstance(cfg, str):
        cfg = ModelConfig.named(cfg)
    return MV4DModel(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
