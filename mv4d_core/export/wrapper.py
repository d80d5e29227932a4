"""The exported module: ``MV4DModel.forward`` with positional tensors in and a tuple out.

:class:`ExportWrapper` only packs the graph inputs (:func:`mv4d_core.engines.arrays.input_names`)
into :class:`ModelInputs` and returns :data:`~mv4d_core.models.outputs.INFERENCE_OUTPUTS` as a
tuple; every computation is the model's own forward (see ``mv4d_core.models.model``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mv4d_core.engines.arrays import input_names, output_names
from mv4d_core.models.inputs import ModelInputs


class ExportWrapper(nn.Module):
    """Eval-mode ``MV4DModel`` as ``forward(*inputs) -> tuple``; shares the wrapped model's parameters."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.cfg = model.cfg
        self.eval()

    @property
    def input_names(self) -> tuple[str, ...]:
        return input_names(self.cfg.temporal, self.cfg.lidar.enabled)

    @property
    def output_names(self) -> tuple[str, ...]:
        return output_names()

    def forward(self, images: torch.Tensor, intrinsics: torch.Tensor, T_base_cam: torch.Tensor,
                *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = dict(zip(self.input_names[3:], rest))
        out = self.model(ModelInputs(images, intrinsics, T_base_cam, **named))
        named = out.inference_tensors()
        return tuple(named[n] for n in self.output_names)


def example_inputs(cfg, batch: int = 1, seed: int = 0, temporal_prev: bool = False) -> tuple[torch.Tensor, ...]:
    """Deterministic inputs for tracing/tests: random images, a ring of ``cfg.num_cameras`` cameras
    looking outwards 1.5 m above base_link, and (temporal) a previous volume with a 1 m forward move."""
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
    out = (images, intrinsics, T_base_cam)
    X, Y, Z = cfg.grid.shape
    if cfg.temporal:
        prev = torch.rand(batch, cfg.volume_channels, X, Y, Z, generator=gen) if temporal_prev else \
            torch.zeros(batch, cfg.volume_channels, X, Y, Z)
        T_prev_cur = torch.eye(4).expand(batch, 4, 4).clone()
        if temporal_prev:
            T_prev_cur[:, 0, 3] = 1.0
            T_prev_cur[:, 1, 3] = 0.3
        out += (prev, T_prev_cur, torch.full((batch,), 1.0 if temporal_prev else 0.0))
    if cfg.lidar.enabled:
        from mv4d_core.models.lidar_inputs import volume_channels

        vol = torch.rand(batch, volume_channels(cfg.lidar.previous_sweeps), X, Y, Z, generator=gen)
        depth = torch.rand(batch, N, 3, H, W, generator=gen) * torch.tensor([30.0, 30.0, 1.0]).view(1, 1, 3, 1, 1)
        depth[:, :, 2] = (depth[:, :, 2] > 0.7).float()
        depth[:, :, 0] *= depth[:, :, 2]
        out += (vol, depth, torch.ones(batch))
    return out
