"""Preview image of one frame: the 6 cameras in a 2x3 grid, with depth and semantics rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mv4d_core.data.classes import colorize
from mv4d_core.data.frame import FrameRecord


def depth_to_rgb(depth_m: np.ndarray, max_m: float = 60.0) -> np.ndarray:
    """``(H, W)`` depth -> ``(H, W, 3)`` uint8, near = bright yellow, far = dark blue, sky = black."""
    d = np.clip(np.nan_to_num(depth_m, posinf=max_m) / max_m, 0, 1)
    x = 1.0 - np.sqrt(d)
    rgb = np.stack([x, 0.8 * x ** 1.5 + 0.1 * (1 - x), 0.5 * (1 - x) + 0.2], -1)
    rgb[~np.isfinite(depth_m)] = 0
    return (rgb * 255).astype(np.uint8)


def _ring(tiles: list[np.ndarray]) -> np.ndarray:
    """6 tiles in nuScenes layout: front row (FL, F, FR) over back row (BL, B, BR)."""
    return np.concatenate([np.concatenate(tiles[:3], 1), np.concatenate(tiles[3:6], 1)], 0)


def preview_image(frame: FrameRecord) -> np.ndarray:
    """``(rows, cols, 3)`` uint8 RGB: camera images, then depth, then semantics (when GT exists)."""
    parts = [_ring(list(frame.images))]
    if frame.gt is not None and frame.gt.depth_m is not None:
        parts.append(_ring([depth_to_rgb(d) for d in frame.gt.depth_m]))
    if frame.gt is not None and frame.gt.semantics is not None:
        parts.append(_ring([colorize(s) for s in frame.gt.semantics]))
    return np.concatenate(parts, 0)


def save_preview(frame: FrameRecord, path: str | Path, scale: int = 1) -> Path:
    """Write :func:`preview_image` as PNG (nearest-neighbour upscaled by ``scale``)."""
    import cv2

    img = preview_image(frame)
    if scale > 1:
        img = np.repeat(np.repeat(img, scale, 0), scale, 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img[..., ::-1]):
        raise OSError(f"could not write preview {path}")
    return path
