"""The mv4d network: shared 2D encoder -> LSS lift -> temporal fusion -> 3D neck -> voxel heads."""

from __future__ import annotations

import torch
from torch import nn

from mv4d_core.models.backbone import ResNetBackbone, random_patch_mask
from mv4d_core.models.config import ModelConfig
from mv4d_core.models.heads import Neck3D, VoxelHeads, occupancy_from_sdf
from mv4d_core.models.inputs import ModelInputs
from mv4d_core.models.lift import DepthNet, LSSLift, depth_bin_centers, depth_distributions
from mv4d_core.models.neck import FPNNeck
from mv4d_core.models.outputs import ModelOutputs, depth_map_intrinsics
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
        self.neck3d = Neck3D(cfg.volume_channels, cfg.head_channels, cfg.neck3d_layers)
        self.heads = VoxelHeads(cfg.head_channels, cfg.grid, cfg.num_semantic_classes, cfg.ground_z_m,
                                cfg.flow_gate)
        self.sharpness = Sharpness(cfg.sharpness_init, cfg.sharpness_min_inv_s)
        self.register_buffer("depth_bins_m", depth_bin_centers(cfg.depth), persistent=False)
        #: Optional generator for reproducible MAE masks (tests/benchmarks).
        self.mask_generator: torch.Generator | None = None

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B*N, 3, H, W)`` -> (stride-8 features, stride-4 skip); masks patches when training."""
        m = self.cfg.masking
        if self.training and m.enabled and m.ratio > 0:
            keep = random_patch_mask(images.shape[0], images.shape[2], images.shape[3], m.patch_size, m.ratio,
                                     self.mask_generator, images.device)
            images = images * keep
        return self.neck(self.backbone(images))

    def forward(self, inputs: ModelInputs) -> ModelOutputs:
        cfg = self.cfg
        B, N = inputs.batch_size, inputs.num_cameras
        H, W = inputs.image_size
        if (H, W) != (cfg.image_height, cfg.image_width):
            raise ValueError(f"ModelInputs.images are {H}x{W} but the model expects "
                             f"{cfg.image_height}x{cfg.image_width}; use inputs_from_frames to resize")
        feat8, skip4 = self.encode_images(inputs.images.reshape(B * N, 3, H, W))
        logits8, context, logits4, conf4 = self.depth_net(feat8, skip4)
        depth_prob, depth_prob4, depth_m = depth_distributions(logits8, logits4, self.depth_bins_m, B, N)
        h8, w8 = logits8.shape[-2:]
        h4, w4 = logits4.shape[-2:]
        volume = self.lift(depth_prob, context.view(B, N, -1, h8, w8), inputs.intrinsics, inputs.T_base_cam)
        fused = volume
        if self.temporal is not None:
            fused = self.temporal(volume, inputs.prev_volume, inputs.T_prev_cur)
        feats = self.neck3d(fused)
        heads = self.heads(feats)
        inv_s = self.sharpness()
        sdf = heads["sdf"]
        field_parts = [sdf.unsqueeze(1), heads["rgb"]]
        if "semantic_logits" in heads:
            field_parts.append(heads["semantic_logits"])
        return ModelOutputs(
            sdf=sdf, occupancy_prob=occupancy_from_sdf(sdf, inv_s, cfg.occupancy_margin_m), flow_mps=heads["flow_mps"], rgb=heads["rgb"],
            semantic_logits=heads.get("semantic_logits"), voxel_confidence_logit=heads["confidence_logit"],
            depth_m=depth_m, depth_prob4=depth_prob4, depth_confidence_logit=conf4.view(B, N, h4, w4),
            depth_intrinsics=depth_map_intrinsics(inputs.intrinsics, (H, W), (h4, w4)),
            depth_prob=depth_prob, depth_bins_m=self.depth_bins_m, features=feats,
            field=torch.cat(field_parts, 1), state_volume=volume, inv_s=inv_s, grid=cfg.grid)


def build_model(cfg: ModelConfig | str = "tiny") -> MV4DModel:
    """Build the network for a :class:`ModelConfig` (or a preset name, ``"tiny"``/``"base"``)."""
    if isinstance(cfg, str):
        cfg = ModelConfig.named(cfg)
    return MV4DModel(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
