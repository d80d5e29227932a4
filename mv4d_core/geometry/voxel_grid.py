"""Axis-aligned voxel grids in ``base_link`` (metres): range, voxel size, shape and index maps.

Index order is ``(ix, iy, iz)`` along base_link x (forward), y (left), z (up); arrays holding a
grid are shaped ``(X, Y, Z)`` (or ``(..., C, X, Y, Z)`` for torch volumes). Voxel ``(0, 0, 0)``
spans ``[range_min, range_min + voxel_size)`` and its centre is ``range_min + voxel_size / 2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VoxelGridSpec:
    """A regular grid over ``[range_min, range_max)`` with cubic or box voxels of ``voxel_size`` m."""

    range_min: tuple[float, float, float]
    range_max: tuple[float, float, float]
    voxel_size: tuple[float, float, float]

    def __post_init__(self) -> None:
        lo, hi, vs = (np.asarray(v, dtype=np.float64) for v in (self.range_min, self.range_max, self.voxel_size))
        if lo.shape != (3,) or hi.shape != (3,) or vs.shape != (3,):
            raise ValueError("voxel grid range_min, range_max and voxel_size need 3 values each")
        if np.any(vs <= 0):
            raise ValueError(f"voxel_size must be positive, got {tuple(vs)}")
        if np.any(hi <= lo):
            raise ValueError(f"range_max {tuple(hi)} must exceed range_min {tuple(lo)}")
        n = (hi - lo) / vs
        if np.any(np.abs(n - np.round(n)) > 1e-6):
            raise ValueError(f"range {tuple(hi - lo)} is not a whole number of voxels of {tuple(vs)}")
        for name, v in (("range_min", lo), ("range_max", hi), ("voxel_size", vs)):
            object.__setattr__(self, name, tuple(float(x) for x in v))

    @classmethod
    def from_dict(cls, d: dict) -> "VoxelGridSpec":
        vs = d["voxel_size"]
        if np.isscalar(vs):
            vs = (vs, vs, vs)
        return cls(tuple(d["range_min"]), tuple(d["range_max"]), tuple(vs))

    def to_dict(self) -> dict:
        return {"range_min": list(self.range_min), "range_max": list(self.range_max),
                "voxel_size": list(self.voxel_size)}

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(X, Y, Z)`` number of voxels."""
        n = (np.asarray(self.range_max) - np.asarray(self.range_min)) / np.asarray(self.voxel_size)
        return tuple(int(round(x)) for x in n)

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.shape))

    def index_to_metric(self, index) -> np.ndarray:
        """Voxel indices ``(..., 3)`` (integer or fractional) -> centres in metres ``(..., 3)``."""
        return np.asarray(self.range_min) + (np.asarray(index, dtype=np.float64) + 0.5) * np.asarray(self.voxel_size)

    def metric_to_index(self, points) -> np.ndarray:
        """Points ``(..., 3)`` in metres -> continuous voxel coordinates (centre of voxel i at i)."""
        return (np.asarray(points, dtype=np.float64) - np.asarray(self.range_min)) / np.asarray(self.voxel_size) - 0.5

    def points_to_voxels(self, points) -> tuple[np.ndarray, np.ndarray]:
        """Points ``(N, 3)`` -> (integer voxel indices ``(N, 3)``, inside mask ``(N,)``).

        Points outside the range or non-finite get index -1 and ``inside=False``.
        """
        p = np.asarray(points, dtype=np.float64)
        idx = np.floor((p - np.asarray(self.range_min)) / np.asarray(self.voxel_size))
        finite = np.all(np.isfinite(idx), axis=-1)
        idx = np.where(finite[..., None], idx, -1)
        inside = finite & np.all((idx >= 0) & (idx < np.asarray(self.shape)), axis=-1)
        idx = np.where(inside[..., None], idx, -1).astype(np.int64)
        return idx, inside

    def centers(self) -> np.ndarray:
        """``(X, Y, Z, 3)`` voxel centres in metres."""
        axes = [self.range_min[i] + (np.arange(self.shape[i]) + 0.5) * self.voxel_size[i] for i in range(3)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), -1)

    def normalized(self, points):
        """Points in metres -> ``[-1, 1]`` grid coordinates as ``torch.nn.functional.grid_sample``
        expects with ``align_corners=False`` (-1 and 1 are the outer faces of the grid)."""
        lo = np.asarray(self.range_min)
        hi = np.asarray(self.range_max)
        if hasattr(points, "new_tensor"):
            lo_t, hi_t = points.new_tensor(lo), points.new_tensor(hi)
            return 2 * (points - lo_t) / (hi_t - lo_t) - 1
        return 2 * (np.asarray(points) - lo) / (hi - lo) - 1


#: Occ3D-nuScenes grid: 200 x 200 x 16 voxels of 0.4 m over [-40, 40]^2 x [-1, 5.4].
OCC3D = VoxelGridSpec((-40.0, -40.0, -1.0), (40.0, 40.0, 5.4), (0.4, 0.4, 0.4))
#: CPU-sized grid: 100 x 100 x 8 voxels of 0.8 m over the same range.
TINY = VoxelGridSpec((-40.0, -40.0, -1.0), (40.0, 40.0, 5.4), (0.8, 0.8, 0.8))
