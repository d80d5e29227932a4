"""Pinhole cameras: intrinsics, image size, resize/crop, projection and unprojection.

Frames: camera points are in the REP 103 *optical* frame (z forward, x right, y down), the
frame of ``CameraInfo.header.frame_id`` and of nuScenes ``calibrated_sensor``. A camera's body
frame (x forward, y left, z up) differs by the fixed rotation :data:`R_BODY_OPTICAL`.

Pixels: ``(u, v)`` with the centre of the top-left pixel at ``(0, 0)`` (OpenCV and ROS
``CameraInfo.K`` convention). Resizing therefore maps ``u -> (u + 0.5) * s - 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mv4d_core.geometry.transforms import _is_torch, _stack, make_transform

#: Rotation taking optical-frame vectors (z fwd, x right, y down) to body-frame (x fwd, y left, z up).
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
#: The same as a 4x4 transform ``T_body_optical``.
T_BODY_OPTICAL = make_transform(R_BODY_OPTICAL, np.zeros(3))


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics ``K`` (3, 3) of an undistorted pinhole camera with an image of ``width x height`` px."""

    K: np.ndarray
    width: int
    height: int
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"camera K must be 3x3, got shape {K.shape}")
        if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"camera K needs finite, positive focal lengths, got fx={K[0, 0]}, fy={K[1, 1]}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "distortion", np.asarray(self.distortion, dtype=np.float64))

    @classmethod
    def from_fov(cls, hfov_deg: float, width: int, height: int) -> "PinholeCamera":
        """Square-pixel camera with a given horizontal field of view and centred principal point."""
        f = 0.5 * width / np.tan(np.deg2rad(hfov_deg) / 2)
        return cls(np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]]), width, height)

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    def resized(self, width: int, height: int) -> "PinholeCamera":
        """The same camera after resizing the image to ``width x height`` (K follows the pixel centres)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0, 0] *= sx
        K[0, 1] *= sx
        K[1, 1] *= sy
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        return PinholeCamera(K, width, height, self.distortion)

    def cropped(self, x0: int, y0: int, width: int, height: int) -> "PinholeCamera":
        """The camera seen through the crop window starting at pixel ``(x0, y0)``."""
        if x0 < 0 or y0 < 0 or x0 + width > self.width or y0 + height > self.height:
            raise ValueError(
                f"crop ({x0},{y0},{width}x{height}) leaves the {self.width}x{self.height} image")
        K = self.K.copy()
        K[0, 2] -= x0
        K[1, 2] -= y0
        return PinholeCamera(K, width, height, self.distortion)

    def project(self, points_cam, min_depth: float = 1e-3):
        """See :func:`project`."""
        return project(self.K, points_cam, self.width, self.height, min_depth)

    def unproject(self, uv, depth):
        """See :func:`unproject`."""
        return unproject(self.K, uv, depth)

    def pixel_grid(self, stride: int = 1) -> np.ndarray:
        """``(H/stride, W/stride, 2)`` pixel-centre coordinates ``(u, v)`` as float64."""
        v, u = np.meshgrid(np.arange(0, self.height, stride), np.arange(0, self.width, stride), indexing="ij")
        return np.stack([u, v], -1).astype(np.float64)


def project(K, points_cam, width: int | None = None, height: int | None = None, min_depth: float = 1e-3):
    """Project optical-frame points ``(..., N, 3)`` with ``K`` ``(..., 3, 3)``.

    Returns ``(uv (..., N, 2), depth_m (..., N), valid (..., N) bool)``. ``depth_m`` is the
    optical z. Points with ``z <= min_depth`` are behind the camera: their ``uv`` is set to
    NaN (never a mirrored ghost pixel) and ``valid`` is False. When ``width``/``height`` are
    given, ``valid`` also requires the pixel centre to fall inside ``[-0.5, W-0.5) x [-0.5, H-0.5)``.
    """
    z = points_cam[..., 2]
    in_front = z > min_depth
    if _is_torch(points_cam):
        import torch

        K = torch.as_tensor(K, dtype=points_cam.dtype, device=points_cam.device)
        safe_z = torch.where(in_front, z, torch.ones_like(z))
        nan = torch.full_like(z, float("nan"))
        where = torch.where
    else:
        K = np.asarray(K)
        safe_z = np.where(in_front, z, 1.0)
        nan = np.full_like(z, np.nan, dtype=np.result_type(z, np.float32))
        where = np.where
    x = points_cam[..., 0] / safe_z
    y = points_cam[..., 1] / safe_z
    u = K[..., 0, 0, None] * x + K[..., 0, 1, None] * y + K[..., 0, 2, None]
    v = K[..., 1, 1, None] * y + K[..., 1, 2, None]
    u = where(in_front, u, nan)
    v = where(in_front, v, nan)
    valid = in_front
    if width is not None and height is not None:
        inside = (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)
        valid = valid & inside
    return _stack([u, v], -1, points_cam), z, valid


def unproject(K, uv, depth_m):
    """Pixels ``(..., N, 2)`` with optical depths ``(..., N)`` -> optical-frame points ``(..., N, 3)``."""
    if _is_torch(uv):
        import torch

        K = torch.as_tensor(K, dtype=uv.dtype, device=uv.device)
    else:
        K = np.asarray(K)
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]
    cx, cy, skew = K[..., 0, 2, None], K[..., 1, 2, None], K[..., 0, 1, None]
    y = (uv[..., 1] - cy) / fy
    x = (uv[..., 0] - cx - skew * y) / fx
    return _stack([x * depth_m, y * depth_m, depth_m], -1, uv)


def pixel_rays(K, uv):
    """Unit-z ray directions ``(..., N, 3)`` in the optical frame for pixels ``(..., N, 2)``.

    Multiplying by an optical depth gives the point; ``t`` along the normalized direction is
    ``depth * ||d||``.
    """
    if _is_torch(uv):
        import torch

        ones = torch.ones_like(uv[..., 0])
    else:
        ones = np.ones_like(uv[..., 0])
    return unproject(K, uv, ones)
