"""The LiDAR branch of the fusion model: a 3D encoder of the LiDAR volume, fused with the camera
volume before the 3D neck, and a full-resolution depth head guided by each camera's sparse LiDAR
depth and its classical completion (inputs from :mod:`mv4d_core.models.lidar_inputs`).

``lidar_valid`` (B,) is 0 for a sample without a usable sweep: the LiDAR features are multiplied by
it and the depth head falls back to the camera depth, so one graph serves both cases.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mv4d_core.models.backbone import norm2d
from mv4d_core.models.heads import norm3d


class LidarEncoder(nn.Module):
    """``(B, C_in, X, Y, Z)`` LiDAR volume -> ``(B, C, X, Y, Z)`` features (zero where ``lidar_valid`` is 0)."""

    def __init__(self, in_channels: int, channels: int, layers: int = 1) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Conv3d(in_channels if i == 0 else channels, channels, 3, 1, 1, bias=False), norm3d(channels),
                     nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*mods)

    def forward(self, volume: torch.Tensor, lidar_valid: torch.Tensor) -> torch.Tensor:
        return self.net(volume) * lidar_valid.to(volume.dtype).reshape(-1, 1, 1, 1, 1)


def _log_depth(d: torch.Tensor) -> torch.Tensor:
    return torch.log(d.clamp(min=0.5))


class DepthRefiner(nn.Module):
    """Per camera at the model image size: RGB, the sparse LiDAR depth and its validity, the classical
    completion, and the camera depth head's stride-4 map upsampled -> depth (m).

    The output is ``exp(base + residual)`` with ``base`` the log of the completion where it has a
    value and of the camera depth elsewhere; the last conv starts at zero, so an untrained head
    publishes the completion (or the camera depth without LiDAR). With ``support_px`` > 0 the residual
    is zero farther than that from every input LiDAR pixel (a max-pool of the validity)."""

    def __init__(self, channels: int, groups: int = 4, max_depth_m: float = 100.0, support_px: int = 0) -> None:
        super().__init__()
        c, c2 = channels, channels + channels // 2
        self.max_depth_m = max_depth_m
        self.support_px = support_px
        self.stem = nn.Sequential(nn.Conv2d(8, c, 3, 1, 1, bias=False), norm2d(c, groups), nn.ReLU(inplace=True))
        self.down = nn.Sequential(nn.Conv2d(c, c2, 3, 2, 1, bias=False), norm2d(c2, groups), nn.ReLU(inplace=True),
                                  nn.Conv2d(c2, c2, 3, 1, 1, bias=False), norm2d(c2, groups), nn.ReLU(inplace=True))
        self.up = nn.Sequential(nn.Conv2d(c + c2, c, 3, 1, 1, bias=False), norm2d(c, groups), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(c, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, images: torch.Tensor, lidar_depth: torch.Tensor, camera_depth_m: torch.Tensor,
                lidar_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images`` (B, N, 3, H, W), ``lidar_depth`` (B, N, 3, H, W), ``camera_depth_m`` (B, N, h4, w4),
        ``lidar_valid`` (B,) -> ``(depth (B, N, H, W) m, log-depth residual (B, N, H, W))``; the residual
        is what the head changed of its base (a training loss keeps it at zero where nothing says
        otherwise)."""
        B, N, _, H, W = images.shape
        gate = lidar_valid.to(images.dtype).reshape(B, 1, 1, 1, 1)
        ld = lidar_depth * gate
        sparse, completion, valid = ld[:, :, 0:1], ld[:, :, 1:2], ld[:, :, 2:3]
        cam = F.interpolate(camera_depth_m.reshape(B * N, 1, *camera_depth_m.shape[-2:]), size=(H, W),
                            mode="bilinear", align_corners=False).reshape(B, N, 1, H, W)
        has_completion = (completion > 0.1).to(images.dtype)
        base = has_completion * _log_depth(completion) + (1 - has_completion) * _log_depth(cam)
        x = torch.cat([images, _log_depth(sparse) * valid, valid, _log_depth(completion) * has_completion,
                       has_completion, _log_depth(cam)], 2).reshape(B * N, 8, H, W)
        f1 = self.stem(x)
        f2 = self.down(f1)
        f = self.up(torch.cat([f1, F.interpolate(f2, size=(H, W), mode="bilinear", align_corners=False)], 1))
        residual = self.out(f)
        if self.support_px > 0:
            k, r = 2 * self.support_px + 1, self.support_px
            # a k x k max is a k x 1 max of a 1 x k max: a third of the time of the square window on CPU
            support = F.max_pool2d(F.max_pool2d(valid.reshape(B * N, 1, H, W), (1, k), 1, (0, r)), (k, 1), 1, (r, 0))
            residual = residual * support
        log_d = base.reshape(B * N, 1, H, W) + residual
        return (torch.exp(log_d).clamp(max=self.max_depth_m).reshape(B, N, H, W), residual.reshape(B, N, H, W))
