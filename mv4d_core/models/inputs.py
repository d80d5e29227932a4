"""Model inputs, and the one rule that brings camera images to the model size.

Frames and units: images ``(B, N, 3, H, W)`` float RGB in [0, 1] at the model size;
``intrinsics`` ``(B, N, 3, 3)`` for that size (pixel centres at integer coordinates);
``T_base_cam`` ``(B, N, 4, 4)`` optical camera -> base_link; ``T_prev_cur`` ``(B, 4, 4)`` current
base_link -> previous base_link (``inv(T_world_prev) @ T_world_cur``); ``prev_valid`` ``(B,)`` 1 where
``prev_volume`` holds the previous frame's state, 0 for the first frame of a sequence.
Fusion models also take ``lidar_volume`` ``(B, C_l, X, Y, Z)``, ``lidar_depth`` ``(B, N, 3, H, W)``
(:mod:`mv4d_core.models.lidar_inputs`) and ``lidar_valid`` ``(B,)`` (0: no usable sweep).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from mv4d_core.geometry.camera import PinholeCamera
from mv4d_core.geometry.transforms import invert_transform


@dataclass
class ModelInputs:
    """One batch for :class:`MV4DModel`. ``prev_volume`` is ``ModelOutputs.state_volume`` of the
    previous frame (B, C, X, Y, Z), given with ``T_prev_cur`` and ``prev_valid``; all three None
    means "first frame" (the model then fuses zeros with ``prev_valid = 0``)."""

    images: torch.Tensor
    intrinsics: torch.Tensor
    T_base_cam: torch.Tensor
    prev_volume: torch.Tensor | None = None
    T_prev_cur: torch.Tensor | None = None
    prev_valid: torch.Tensor | None = None
    lidar_volume: torch.Tensor | None = None
    lidar_depth: torch.Tensor | None = None
    lidar_valid: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 5 or self.images.shape[2] != 3:
            raise ValueError(f"ModelInputs.images must be (B, N, 3, H, W), got {tuple(self.images.shape)}")
        B, N = self.images.shape[:2]
        if tuple(self.intrinsics.shape) != (B, N, 3, 3):
            raise ValueError(f"ModelInputs.intrinsics must be ({B}, {N}, 3, 3), got {tuple(self.intrinsics.shape)}")
        if tuple(self.T_base_cam.shape) != (B, N, 4, 4):
            raise ValueError(f"ModelInputs.T_base_cam must be ({B}, {N}, 4, 4), got {tuple(self.T_base_cam.shape)}")
        given = [x is not None for x in (self.prev_volume, self.T_prev_cur, self.prev_valid)]
        if any(given) and not all(given):
            raise ValueError("ModelInputs: give prev_volume, T_prev_cur and prev_valid together (or none)")
        if self.T_prev_cur is not None and tuple(self.T_prev_cur.shape) != (B, 4, 4):
            raise ValueError(f"ModelInputs.T_prev_cur must be ({B}, 4, 4), got {tuple(self.T_prev_cur.shape)}")
        if self.prev_valid is not None and tuple(self.prev_valid.shape) != (B,):
            raise ValueError(f"ModelInputs.prev_valid must be ({B},), got {tuple(self.prev_valid.shape)}")
        lidar = [x is not None for x in (self.lidar_volume, self.lidar_depth, self.lidar_valid)]
        if any(lidar) and not all(lidar):
            raise ValueError("ModelInputs: give lidar_volume, lidar_depth and lidar_valid together (or none)")
        if self.lidar_depth is not None:
            H, W = self.images.shape[3:]
            if tuple(self.lidar_depth.shape) != (B, N, 3, H, W):
                raise ValueError(f"ModelInputs.lidar_depth must be ({B}, {N}, 3, {H}, {W}), "
                                 f"got {tuple(self.lidar_depth.shape)}")

    @property
    def batch_size(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_cameras(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the model images."""
        return int(self.images.shape[3]), int(self.images.shape[4])

    def to(self, device=None, dtype=None) -> "ModelInputs":
        def mv(x):
            if x is None:
                return None
            return x.to(device=device, dtype=dtype if dtype is not None and x.is_floating_point() else None)
        return ModelInputs(**{f.name: mv(getattr(self, f.name)) for f in fields(self)})

    def with_previous(self, prev_volume: torch.Tensor, T_prev_cur: torch.Tensor,
                      prev_valid: torch.Tensor | None = None) -> "ModelInputs":
        """A copy carrying the previous frame's state (``ModelOutputs.state_volume``, detached by the caller
        if gradients should not flow back in time); ``prev_valid`` defaults to ones."""
        if prev_valid is None:
            prev_valid = prev_volume.new_ones(prev_volume.shape[0])
        return replace(self, prev_volume=prev_volume, T_prev_cur=T_prev_cur, prev_valid=prev_valid)


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(height, width, 3)`` uint8 (area filter when shrinking, linear when growing)."""
    import cv2

    if image.shape[0] == height and image.shape[1] == width:
        return image
    shrink = width < image.shape[1] or height < image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_cameras(images: np.ndarray, intrinsics: np.ndarray, height: int, width: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The model-size rule for camera images: ``images`` ``(N, H, W, 3)`` uint8 and ``intrinsics``
    ``(N, 3, 3)`` for ``H x W`` -> ``(N, height, width, 3)`` uint8 and K for the new size
    (:meth:`PinholeCamera.resized`: pixel centres follow ``u -> (u + 0.5) s - 0.5``)."""
    if len(images) == 0:             # a LiDAR-only frame: no cameras to resize
        return np.zeros((0, height, width, 3), np.uint8), np.zeros((0, 3, 3))
    h, w = images.shape[1:3]
    rgb = np.stack([resize_image(im, width, height) for im in images])
    Ks = np.stack([PinholeCamera(K, w, h).resized(width, height).K for K in intrinsics])
    return rgb, Ks


def relative_pose(T_world_prev: np.ndarray, T_world_cur: np.ndarray) -> np.ndarray:
    """``T_prev_cur = inv(T_world_prev) @ T_world_cur`` (4, 4): current base_link -> previous base_link."""
    return invert_transform(np.asarray(T_world_prev, dtype=np.float64)) @ np.asarray(T_world_cur, dtype=np.float64)
