"""ResNet-style 2D image encoder shared by all cameras, and MAE-style patch masking of its input."""

from __future__ import annotations

import torch
from torch import nn

from mv4d_core.models.config import BackboneConfig


def norm2d(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``groups`` that divides ``channels``."""
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34 block)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.norm1 = norm2d(out_ch, groups)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.norm2 = norm2d(out_ch, groups)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), norm2d(out_ch, groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act(y + self.shortcut(x))


class ResNetBackbone(nn.Module):
    """Images ``(B, 3, H, W)`` -> feature maps at strides 4, 8, 16, ... (one per stage)."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        g = cfg.norm_groups
        self.stem = nn.Sequential(nn.Conv2d(3, cfg.stem_channels, 3, 2, 1, bias=False),
                                  norm2d(cfg.stem_channels, g), nn.ReLU(inplace=True))
        stages = []
        in_ch = cfg.stem_channels
        for out_ch, n_blocks in zip(cfg.stage_channels, cfg.blocks_per_stage):
            blocks = [BasicBlock(in_ch, out_ch, 2, g)]
            blocks += [BasicBlock(out_ch, out_ch, 1, g) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(cfg.stage_channels)
        self.strides = tuple(2 ** (i + 2) for i in range(len(stages)))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def random_patch_mask(batch: int, height: int, width: int, patch_size: int, ratio: float,
                      generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Keep-mask ``(batch, 1, height, width)`` float: 0 on exactly ``round(ratio * num_patches)``
    randomly chosen ``patch_size`` px patches per image (partial patches at the border count), 1 elsewhere."""
    ph, pw = -(-height // patch_size), -(-width // patch_size)
    n = ph * pw
    n_masked = int(round(ratio * n))
    scores = torch.rand(batch, n, generator=generator, device=device if generator is None else generator.device)
    order = scores.argsort(dim=1)
    keep = torch.ones(batch, n, device=order.device)
    keep.scatter_(1, order[:, :n_masked], 0.0)
    keep = keep.view(batch, 1, ph, pw)
    keep = keep.repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)
    return keep[:, :, :height, :width].to(device) if device is not None else keep[:, :, :height, :width]
