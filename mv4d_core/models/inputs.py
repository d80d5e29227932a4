"""Model inputs and their construction from :class:`FrameRecord` batches.

Frames and units: images ``(B, N, 3, H, W)`` float RGB in [0, 1] at the model size;
``intrinsics`` ``(B, N, 3, 3)`` for that size (pixel centres at integer coordinates);
``T_base_cam`` ``(B, N, 4, 4)`` optical camera -> base_link; ``T_prev_cur`` ``(B, 4, 4)`` current
base_link -> previous base_link (``inv(T_world_prev) @ T_world_cur``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from mv4d_core.geometry.camera import PinholeCamera
from mv4d_core.geometry.transforms import invert_transform


@dataclass
class ModelInputs:
    """One batch for :class:`MV4DModel`. ``prev_volume`` is ``ModelOutputs.state_volume`` of the
    previous frame (B, C, X, Y, Z); give it together with ``T_prev_cur``."""

    images: torch.Tensor
    intrinsics: torch.Tensor
    T_base_cam: torch.Tensor
    T_prev_cur: torch.Tensor | None = None
    prev_volume: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 5 or self.images.shape[2] != 3:
            raise ValueError(f"ModelInputs.images must be (B, N, 3, H, W), got {tuple(self.images.shape)}")
        B, N = self.images.shape[:2]
        if tuple(self.intrinsics.shape) != (B, N, 3, 3):
            raise ValueError(f"ModelInputs.intrinsics must be ({B}, {N}, 3, 3), got {tuple(self.intrinsics.shape)}")
        if tuple(self.T_base_cam.shape) != (B, N, 4, 4):
            raise ValueError(f"ModelInputs.T_base_cam must be ({B}, {N}, 4, 4), got {tuple(self.T_base_cam.shape)}")
        if self.T_prev_cur is not None and tuple(self.T_prev_cur.shape) != (B, 4, 4):
            raise ValueError(f"ModelInputs.T_prev_cur must be ({B}, 4, 4), got {tuple(self.T_prev_cur.shape)}")
        if self.prev_volume is not None and self.T_prev_cur is None:
            raise ValueError("ModelInputs.prev_volume needs ModelInputs.T_prev_cur")

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
        return ModelInputs(mv(self.images), mv(self.intrinsics), mv(self.T_base_cam), mv(self.T_prev_cur),
                           mv(self.prev_volume))

    def with_previous(self, prev_volume: torch.Tensor | None, T_prev_cur: torch.Tensor | None) -> "ModelInputs":
        """A copy carrying the previous frame's state (``ModelOutputs.state_volume``, detached by the caller
        if gradients should not flow back in time)."""
        return replace(self, prev_volume=prev_volume, T_prev_cur=T_prev_cur)


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(height, width, 3)`` uint8 (area filter when shrinking, linear when growing)."""
    import cv2

    if image.shape[0] == height and image.shape[1] == width:
        return image
    shrink = width < image.shape[1] or height < image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def relative_pose(T_world_prev: np.ndarray, T_world_cur: np.ndarray) -> np.ndarray:
    """``T_prev_cur = inv(T_world_prev) @ T_world_cur`` (4, 4): current base_link -> previous base_link."""
    return invert_transform(np.asarray(T_world_prev, dtype=np.float64)) @ np.asarray(T_world_cur, dtype=np.float64)


def inputs_from_frames(frames: Sequence, cfg, prev_frames: Sequence | None = None,
                       device=None) -> ModelInputs:
    """Batch ``frames`` (list of FrameRecord, one per batch element) at the model image size of ``cfg``.

    Images are resized to ``cfg.image_width x cfg.image_height`` and ``K`` follows with
    :meth:`PinholeCamera.resized`. When ``prev_frames`` (same length) is given, ``T_prev_cur`` is
    computed from the ``T_world_base`` of each consecutive pair; ``prev_volume`` stays None (set it
    from the previous ``ModelOutputs.state_volume`` with :meth:`ModelInputs.with_previous`).
    """
    if len(frames) == 0:
        raise ValueError("inputs_from_frames needs at least one frame")
    W, H = cfg.image_width, cfg.image_height
    n = frames[0].num_cameras
    imgs, Ks, Ts = [], [], []
    for f in frames:
        if f.num_cameras != n:
            raise ValueError(f"all frames need the same number of cameras ({n}); frame {f.stamp_ns} has {f.num_cameras}")
        if n != cfg.num_cameras:
            raise ValueError(f"frame {f.stamp_ns} has {n} cameras but the model config expects {cfg.num_cameras}")
        h, w = f.image_size
        imgs.append(np.stack([resize_image(im, W, H) for im in f.images]))
        Ks.append(np.stack([PinholeCamera(K, w, h).resized(W, H).K for K in f.intrinsics]))
        Ts.append(f.T_base_cam)
    images = torch.from_numpy(np.stack(imgs)).permute(0, 1, 4, 2, 3).float().div_(255.0)
    T_prev_cur = None
    if prev_frames is not None:
        if len(prev_frames) != len(frames):
            raise ValueError(f"prev_frames has {len(prev_frames)} frames but frames has {len(frames)}")
        T_prev_cur = torch.from_numpy(np.stack([relative_pose(p.T_world_base, f.T_world_base)
                                                for p, f in zip(prev_frames, frames)])).float()
    out = ModelInputs(images, torch.from_numpy(np.stack(Ks)).float(), torch.from_numpy(np.stack(Ts)).float(),
                      T_prev_cur)
    return out.to(device) if device is not None else out
