"""Masked LiDAR modelling: what the fusion model's LiDAR input loses at train time.

Each step, the current sweep given to the network drops random points, whole beams (rings),
azimuth sectors, every other ring (the held-out-ring evaluation's 16-of-32 input), and, sometimes,
the whole sweep (the model must then run camera-only, as the node does when the LiDAR stops). The
supervision keeps the full sweep and its ±k fused neighbours, so the network learns to predict what
was dropped. No labels are read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LidarMaskingConfig:
    """Probabilities and ranges of each drop (0 = never). ``point_drop``: fraction of points drawn from
    [0, point_drop]; ``beam_drop``: fraction of rings drawn from [0, beam_drop]; ``every_other_ring``:
    probability of keeping only odd or only even rings; ``sectors``: up to this many azimuth sectors
    of ``sector_deg`` (min, max) degrees; ``sweep_drop``: probability of no LiDAR at all."""

    point_drop: float = 0.5
    beam_drop: float = 0.3
    every_other_ring: float = 0.3
    sectors: int = 2
    sector_deg: tuple[float, float] = (20.0, 90.0)
    sweep_drop: float = 0.1

    def __post_init__(self) -> None:
        self.sector_deg = tuple(float(x) for x in self.sector_deg)   # YAML gives a list

    def validate(self) -> None:
        for name in ("point_drop", "beam_drop", "every_other_ring", "sweep_drop"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"lidar_masking.{name} must be in [0, 1], got {v}")
        lo, hi = self.sector_deg
        if self.sectors < 0 or not 0 < lo <= hi <= 360:
            raise ValueError(f"lidar_masking needs sectors >= 0 and 0 < sector_deg[0] <= sector_deg[1] <= 360, "
                             f"got {self.sectors}, {self.sector_deg}")


def pseudo_rings(xyz: np.ndarray, origin: np.ndarray, beams: int = 32) -> np.ndarray:
    """Ring indices from the elevation angle when a source has none (``beams`` equal bins)."""
    d = np.asarray(xyz, np.float64) - origin
    el = np.arctan2(d[:, 2], np.linalg.norm(d[:, :2], axis=1))
    lo, hi = el.min(), el.max() + 1e-9
    return np.floor((el - lo) / (hi - lo) * beams).astype(np.int16)


def keep_mask(xyz: np.ndarray, ring: np.ndarray | None, origin: np.ndarray, cfg: LidarMaskingConfig,
              rng: np.random.Generator) -> np.ndarray:
    """Boolean ``(P,)``: the points of the sweep the network sees this step."""
    P = len(xyz)
    keep = np.ones(P, bool)
    if P == 0 or rng.random() < cfg.sweep_drop:
        return np.zeros(P, bool)
    ring = pseudo_rings(xyz, origin) if ring is None else np.asarray(ring)
    if cfg.point_drop > 0:
        keep &= rng.random(P) >= rng.uniform(0.0, cfg.point_drop)
    rings = np.unique(ring)
    if cfg.every_other_ring > 0 and rng.random() < cfg.every_other_ring:
        keep &= (ring % 2) == rng.integers(0, 2)
    elif cfg.beam_drop > 0 and len(rings):
        gone = rng.choice(rings, int(round(rng.uniform(0.0, cfg.beam_drop) * len(rings))), replace=False)
        keep &= ~np.isin(ring, gone)
    if cfg.sectors > 0:
        az = np.degrees(np.arctan2(xyz[:, 1] - origin[1], xyz[:, 0] - origin[0]))
        for _ in range(rng.integers(0, cfg.sectors + 1)):
            centre = rng.uniform(-180.0, 180.0)
            half = 0.5 * rng.uniform(*cfg.sector_deg)
            keep &= np.abs((az - centre + 180.0) % 360.0 - 180.0) > half
    return keep
