"""Camera rays in the volume's frame, and the jittered pixel lattice used for SSIM-able ray sets.

A ray is ``origin + t * direction`` with a unit ``direction``, in the frame of the volume (the current
base_link). Cameras of adjacent frames work the same way: pass ``T_vol_cam = T_cur_prev @ T_base_cam``.
``z_per_t`` converts range ``t`` to optical depth (``depth_m = t * z_per_t``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mv4d_core.geometry.camera import pixel_rays


@dataclass
class RayBundle:
    """Rays ``(B, R)``: ``origins`` (B, R, 3) m, ``directions`` (B, R, 3) unit, ``z_per_t`` (B, R),
    ``uv`` (B, R, 2) source pixels, ``camera_index`` (B, R) int64 (index into the cameras that cast them)."""

    origins: torch.Tensor
    directions: torch.Tensor
    z_per_t: torch.Tensor
    uv: torch.Tensor
    camera_index: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.origins.shape[:2])


def rays_from_cameras(K: torch.Tensor, T_vol_cam: torch.Tensor, uv: torch.Tensor) -> RayBundle:
    """Rays through pixels ``uv`` (B, N, R, 2) of cameras ``K`` (B, N, 3, 3) posed at ``T_vol_cam`` (B, N, 4, 4)
    -> :class:`RayBundle` of ``(B, N*R)`` rays (camera-major order)."""
    B, N, R = uv.shape[:3]
    d_cam = pixel_rays(K.to(uv.dtype), uv)                                  # (B, N, R, 3), unit z
    norm = d_cam.norm(dim=-1, keepdim=True)
    d_unit = d_cam / norm
    Rm = T_vol_cam[..., :3, :3].to(uv.dtype)
    dirs = d_unit @ Rm.transpose(-1, -2)                                    # rotate into the volume frame
    origins = T_vol_cam[..., None, :3, 3].to(uv.dtype).expand(B, N, R, 3)
    cam = torch.arange(N, device=uv.device).view(1, N, 1).expand(B, N, R)
    return RayBundle(origins.reshape(B, N * R, 3), dirs.reshape(B, N * R, 3), (1.0 / norm[..., 0]).reshape(B, N * R),
                     uv.reshape(B, N * R, 2), cam.reshape(B, N * R))


def pixel_lattice(height: int, width: int, rows: int, cols: int, jitter: bool = True,
                  generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """A ``rows x cols`` lattice of pixel centres ``(rows, cols, 2)`` as ``(u, v)`` covering the image.

    Cells are ``height/rows x width/cols`` px; with ``jitter`` one random offset (shared by all cells, SelfOcc's
    "cellular" lattice) moves the whole lattice inside a cell, so neighbouring rays stay a regular
    sub-sampled image and SSIM over 3x3 lattice windows is meaningful. Without jitter, cell centres.
    """
    ch, cw = height / rows, width / cols
    if jitter:
        off = torch.rand(2, generator=generator, device=device if generator is None else generator.device)
        off = off.to(device=device, dtype=dtype)
    else:
        off = torch.full((2,), 0.5, device=device, dtype=dtype)
    v = (torch.arange(rows, device=device, dtype=dtype) + off[1]) * ch - 0.5
    u = (torch.arange(cols, device=device, dtype=dtype) + off[0]) * cw - 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], -1)


def lattice_rays(K: torch.Tensor, T_vol_cam: torch.Tensor, height: int, width: int, rows: int, cols: int,
                 jitter: bool = True, generator: torch.Generator | None = None) -> tuple[RayBundle, torch.Tensor]:
    """Rays of a ``rows x cols`` lattice (one jitter per call, shared by all cameras) for cameras ``K``
    (B, N, 3, 3) at ``T_vol_cam`` (B, N, 4, 4) with ``height x width`` images.

    Returns ``(rays (B, N*rows*cols), uv (B, N, rows, cols, 2))``; reshape ray outputs to
    ``(B, N, rows, cols, ...)`` to compute SSIM on the lattice.
    """
    B, N = K.shape[:2]
    uv = pixel_lattice(height, width, rows, cols, jitter, generator, K.device, K.dtype)
    uv = uv.expand(B, N, rows, cols, 2)
    return rays_from_cameras(K, T_vol_cam, uv.reshape(B, N, rows * cols, 2)), uv
