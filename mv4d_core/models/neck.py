"""Multi-scale 2D neck (FPN-lite): fuses all backbone stages into one stride-8 map plus a stride-4 skip."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mv4d_core.models.backbone import norm2d


class FPNNeck(nn.Module):
    """Backbone features at strides (4, 8, 16, ...) -> ``(stride-8 (B, C, H/8, W/8), stride-4 (B, C4, H/4, W/4))``.

    Deeper levels are projected with 1x1 convs, upsampled to stride 8 and summed (top-down pathway),
    then smoothed by a 3x3 conv. The stride-4 map is a 1x1 projection of the first stage, used to
    refine the per-camera depth to stride 4.
    """

    def __init__(self, in_channels: tuple[int, ...], out_channels: int, skip_channels: int, groups: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels[1:])
        self.smooth = nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
                                    norm2d(out_channels, groups), nn.ReLU(inplace=True))
        self.skip = nn.Sequential(nn.Conv2d(in_channels[0], skip_channels, 1, bias=False),
                                  norm2d(skip_channels, groups), nn.ReLU(inplace=True))

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        target = feats[1].shape[-2:]
        x = self.lateral[0](feats[1])
        for lat, f in zip(self.lateral[1:], feats[2:]):
            x = x + F.interpolate(lat(f), size=target, mode="bilinear", align_corners=False)
        return self.smooth(x), self.skip(feats[0])
