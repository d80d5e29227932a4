"""The ground-truth sidecar ``gt.npz`` stored next to a synthetic rosbag.

Keys: ``stamps_ns`` (F,), ``depth_m`` (F, N, H, W) float32, ``semantics`` (F, N, H, W) uint8,
``occupancy`` (F, X, Y, Z) uint8, ``voxel_flow_mps`` (F, X, Y, Z, 3) float32, ``point_flow_m``
(sum P, 3) float32 split by ``point_offsets`` (F + 1,), ``grid`` (JSON of the VoxelGridSpec),
``point_flow_includes_ego`` (F,) bool. Frames are keyed by their header stamp (ns), which is what
``read_frames`` yields back from the bag.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from mv4d_core.data.frame import FrameRecord, GroundTruth
from mv4d_core.geometry.voxel_grid import VoxelGridSpec

SIDECAR_NAME = "gt.npz"


def save_gt_sidecar(out_dir: str | Path, frames: Sequence[FrameRecord]) -> Path:
    """Write the ground truth of ``frames`` (all must carry ``gt``) to ``out_dir/gt.npz``."""
    missing = [f.stamp_ns for f in frames if f.gt is None]
    if missing:
        raise ValueError(f"frames without ground truth (stamps {missing[:3]}...) cannot go into {SIDECAR_NAME}")
    return save_gt_arrays(out_dir, [f.stamp_ns for f in frames], [f.gt for f in frames])


def save_gt_arrays(out_dir: str | Path, stamps_ns: Sequence[int], gts: Sequence[GroundTruth]) -> Path:
    """Write ``gts`` keyed by ``stamps_ns`` to ``out_dir/gt.npz`` (see the module docstring)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(stamps_ns) != len(gts) or not gts:
        raise ValueError(f"need one GroundTruth per stamp and at least one, got {len(gts)} for {len(stamps_ns)}")
    arrays: dict[str, np.ndarray] = {"stamps_ns": np.asarray(stamps_ns, dtype=np.int64)}
    for key in ("depth_m", "semantics", "occupancy", "voxel_flow_mps"):
        vals = [getattr(g, key) for g in gts]
        if all(v is not None for v in vals):
            arrays[key] = np.stack(vals)
    flows = [g.point_flow_m for g in gts]
    if all(v is not None for v in flows):
        arrays["point_flow_m"] = np.concatenate(flows).astype(np.float32)
        arrays["point_offsets"] = np.cumsum([0] + [len(v) for v in flows]).astype(np.int64)
    arrays["point_flow_includes_ego"] = np.array([g.point_flow_includes_ego for g in gts])
    grid = gts[0].occupancy_grid
    arrays["grid"] = np.array(json.dumps(grid.to_dict() if grid is not None else None))
    path = out_dir / SIDECAR_NAME
    np.savez_compressed(path, **arrays)
    return path


def load_gt_sidecar(path: str | Path) -> dict[int, GroundTruth]:
    """``{stamp_ns: GroundTruth}`` from a sidecar (``path`` is the file or the folder holding ``gt.npz``)."""
    path = Path(path)
    if path.is_dir():
        path = path / SIDECAR_NAME
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth sidecar not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    grid_d = json.loads(str(data["grid"]))
    grid = VoxelGridSpec.from_dict(grid_d) if grid_d else None
    out: dict[int, GroundTruth] = {}
    offs = data.get("point_offsets")
    for i, stamp in enumerate(data["stamps_ns"]):
        def get(key):
            return data[key][i] if key in data else None

        pf = data["point_flow_m"][offs[i]:offs[i + 1]] if offs is not None else None
        out[int(stamp)] = GroundTruth(depth_m=get("depth_m"), semantics=get("semantics"), occupancy=get("occupancy"),
                                      occupancy_grid=grid, voxel_flow_mps=get("voxel_flow_mps"), point_flow_m=pf,
                                      point_flow_includes_ego=bool(data["point_flow_includes_ego"][i]))
    return out
