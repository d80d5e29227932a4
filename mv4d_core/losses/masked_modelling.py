"""MIM4D / UniPAD masked-modelling pretexts, tensor-level.

* Spatial: zero a random ``ratio`` of ``patch x patch`` image patches (UniPAD/MIM4D: 30 % of
  32 px patches; mv4d tiny: 16 px).
* Temporal ("drop a frame"): a key frame's volume is reconstructed from its neighbours' volumes
  warped into the key frame by ego motion (MIM4D ``shift_feature``); the reconstruction is
  supervised at volume level (L1 vs the directly encoded key volume) or through rendering
  (L1 of rendered RGB/depth of the reconstructed volume vs images/LiDAR or vs the renders of
  the direct volume).
"""

from __future__ import annotations

import torch

from mv4d_core.geometry.transforms import invert_transform
from mv4d_core.geometry.voxel_grid import VoxelGridSpec
from mv4d_core.losses.base import WeightedLoss
from mv4d_core.models.temporal import warp_volume  # pure ego-warp of (B, C, X, Y, Z) volumes


def random_patch_mask(batch: int, height: int, width: int, patch: int = 16, ratio: float = 0.3,
                      generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``(batch, H, W)`` bool, True on masked pixels.

    Exactly ``round(ratio * n)`` of the ``n = ceil(H/patch) * ceil(W/patch)`` patches are masked
    per image (partial patches at the right/bottom borders count as patches).
    """
    if not 0 <= ratio <= 1:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    if patch <= 0:
        raise ValueError(f"patch must be positive, got {patch}")
    ph, pw = -(-height // patch), -(-width // patch)
    n = ph * pw
    k = int(round(ratio * n))
    scores = torch.rand(batch, n, generator=generator)
    order = scores.argsort(1)
    masked = torch.zeros(batch, n, dtype=torch.bool)
    masked.scatter_(1, order[:, :k], True)
    grid = masked.reshape(batch, ph, pw)
    full = grid.repeat_interleave(patch, 1).repeat_interleave(patch, 2)[:, :height, :width]
    return full.to(device) if device is not None else full


def apply_patch_mask(images: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Images ``(..., C, H, W)`` with ``mask`` ``(..., H, W)`` pixels set to ``fill`` (UniPAD: zeros)."""
    if images.shape[:-3] + images.shape[-2:] != mask.shape:
        raise ValueError(f"mask {tuple(mask.shape)} does not match images {tuple(images.shape)}")
    return torch.where(mask.unsqueeze(-3), torch.full_like(images, fill), images)


def warp_neighbours_to_key(volumes: torch.Tensor, T_world_base: torch.Tensor, key: int, grid: VoxelGridSpec):
    """Ego-warp every non-key frame's volume into the key frame.

    Args:
        volumes: ``(B, F, C, X, Y, Z)`` per-frame volumes, each in its own base_link.
        T_world_base: ``(B, F, 4, 4)`` ego poses.
        key: index of the dropped (to be reconstructed) frame.
    Returns:
        ``(warped (B, F-1, C, X, Y, Z), valid (B, F-1, 1, X, Y, Z) float)`` in frame order without the key.
    """
    B, Fn = volumes.shape[:2]
    if T_world_base.shape != (B, Fn, 4, 4):
        raise ValueError(f"T_world_base must be ({B}, {Fn}, 4, 4), got {tuple(T_world_base.shape)}")
    if not 0 <= key < Fn:
        raise ValueError(f"key {key} outside 0..{Fn - 1}")
    T = T_world_base.to(volumes.dtype)
    warped, valid = [], []
    for f in range(Fn):
        if f == key:
            continue
        T_f_key = invert_transform(T[:, f]) @ T[:, key]
        w, m = warp_volume(volumes[:, f], T_f_key, grid, return_valid=True)
        warped.append(w)
        valid.append(m)
    return torch.stack(warped, 1), torch.stack(valid, 1)


class VolumeReconstructionLoss(WeightedLoss):
    """Masked L1 between a reconstructed key volume and the directly encoded one.

    ``forward(reconstructed (B, C, X, Y, Z), target (B, C, X, Y, Z), valid (B, 1, X, Y, Z) | None)``.
    The target is detached (it is the teacher signal, not a second path to collapse).
    """

    default_reads = {"reconstructed": "key_volume_reconstructed", "target": "key_volume",
                     "valid": "key_volume_valid"}
    optional_reads = frozenset({"valid"})

    def forward(self, reconstructed: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None):
        if reconstructed.shape != target.shape:
            raise ValueError(f"reconstructed {tuple(reconstructed.shape)} != target {tuple(target.shape)}")
        err = (reconstructed - target.detach()).abs()
        if valid is None:
            return err.mean()
        m = valid.to(torch.bool).expand_as(err)
        return err[m].mean() if m.any() else (err * 0).sum()


class RenderedReconstructionLoss(WeightedLoss):
    """MIM4D ``rgb_loss_adj`` + ``depth_loss_adj``: L1 of renders of the reconstructed volume.

    ``forward(rgb (V, R, 3), depth_m (V, R), target_rgb (V, R, 3), target_depth_m (V, R),
    depth_valid (V, R) | None)`` -> ``rgb_weight * L1_rgb + depth_weight * L1_depth`` (depth only
    where valid and > 0). Targets: images + projected LiDAR (MIM4D) or the renders of the
    directly encoded volume (detached here).
    """

    default_reads = {"rgb": "recon_ray_rgb", "depth_m": "recon_ray_depth_m", "target_rgb": "ray_rgb_target",
                     "target_depth_m": "ray_depth_target_m", "depth_valid": "ray_depth_valid"}
    optional_reads = frozenset({"depth_valid", "target_depth_m", "depth_m"})

    def __init__(self, weight: float = 1.0, enable_after: int = 0, reads=None, *,
                 rgb_weight: float = 1.0, depth_weight: float = 1.0):
        super().__init__(weight, enable_after, reads)
        self.rgb_weight, self.depth_weight = rgb_weight, depth_weight

    def forward(self, rgb, depth_m=None, target_rgb=None, target_depth_m=None, depth_valid=None):
        if rgb.shape != target_rgb.shape:
            raise ValueError(f"rgb {tuple(rgb.shape)} != target_rgb {tuple(target_rgb.shape)}")
        loss = self.rgb_weight * (rgb - target_rgb.detach()).abs().mean()
        if depth_m is not None and target_depth_m is not None and self.depth_weight > 0:
            m = torch.isfinite(target_depth_m) & (target_depth_m > 0)
            if depth_valid is not None:
                m = m & depth_valid.bool()
            if m.any():
                loss = loss + self.depth_weight * (depth_m[m] - target_depth_m.detach()[m]).abs().mean()
        return loss
