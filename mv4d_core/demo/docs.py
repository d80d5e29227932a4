"""Small README pictures from the synthetic demo run (never from real data: nuScenes is CC BY-NC-SA).

``demo_panels.png`` stacks the camera/depth panel over the BEV occupancy and flow panels;
``demo_pointcloud.png`` is the point-cloud render. The LiDAR fusion model's panels are used when the
run has them (the shipped fusion weights are the headline), else the camera-only model's. Both are palette-quantised PNGs so they stay
small enough to commit (< 300 KB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_BYTES = 300_000


def _load(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def _fit_width(img: np.ndarray, width: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    return cv2.resize(img, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def _save_small(img: np.ndarray, path: Path) -> Path:
    """Palette PNG, shrunk until it is under :data:`MAX_BYTES`."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        Image.fromarray(img).quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if path.stat().st_size < MAX_BYTES or img.shape[1] < 400:
            return path
        img = _fit_width(img, int(img.shape[1] * 0.8))


def write_docs_pictures(synthetic_dir: Path, docs_dir: Path, width: int = 1200) -> list[Path]:
    """Compose the README pictures from ``synthetic_dir`` (the demo's synthetic section)."""
    synthetic_dir, docs_dir = Path(synthetic_dir), Path(docs_dir)
    tag = "_fusion" if (synthetic_dir / "cameras_depth_fusion.png").is_file() else ""
    cams = _fit_width(_load(synthetic_dir / f"cameras_depth{tag}.png"), width)
    bev = _load(synthetic_dir / f"bev_occupancy{tag}.png")
    flow = _load(synthetic_dir / f"flow_bev{tag}.png")
    h = max(bev.shape[0], flow.shape[0])
    pad = lambda a: np.pad(a, ((0, h - a.shape[0]), (0, 0), (0, 0)), constant_values=255)  # noqa: E731
    bottom = _fit_width(np.concatenate([pad(bev), pad(flow)], axis=1), width)
    out = [_save_small(np.concatenate([cams, bottom], axis=0), docs_dir / "demo_panels.png")]
    render = synthetic_dir / f"pointcloud_render{tag}.png"
    if render.is_file():
        out.append(_save_small(_fit_width(_load(render), 800), docs_dir / "demo_pointcloud.png"))
    return out
