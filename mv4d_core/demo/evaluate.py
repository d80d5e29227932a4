"""Score decoded ``mv4d infer`` outputs against ground truth with the mv4d metrics, next to baselines.

Reference per frame (``FrameRecord`` read back from the bag, with ``gt`` attached for synthetic
data): exact GT depth / occupancy / point flow when present, else the LiDAR projected into the
cameras (depth only). Predicted depth maps (model stride, e.g. 44x24) are bilinearly upsampled to
the reference resolution, as monodepth-style evaluations do. Predicted flow is read at each LiDAR
point's voxel and multiplied by the frame interval, the definition of ``GroundTruth.point_flow_m``
(object motion only, ego motion excluded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mv4d_core.data.classes import CLASS_NAMES, FREE, IGNORE
from mv4d_core.demo.outputs_bag import BagOutputs, OutputsBag
from mv4d_core.geometry.voxel_grid import VoxelGridSpec


@dataclass
class Evaluation:
    """``results``: method -> ``{"depth" | "occupancy" | "flow": compute() dicts}`` (model first, then
    baselines, the layout of :func:`mv4d_core.eval.report.markdown_report`); ``notes``: what was
    skipped or approximated, in words; ``frames``: frames scored."""

    results: dict[str, dict]
    notes: list[str] = field(default_factory=list)
    frames: int = 0
    semantic: bool = False


def upsample_depth(depth_m: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(h, w)`` depth -> ``(height, width)`` bilinear (NaN where any neighbour is NaN)."""
    import cv2

    return cv2.resize(np.asarray(depth_m, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def labels_on_grid(labels: np.ndarray, src: VoxelGridSpec, dst: VoxelGridSpec, fill: int = FREE) -> np.ndarray:
    """Nearest-voxel lookup of ``(X, Y, Z)`` labels on ``src`` at the centres of ``dst`` (``fill`` outside)."""
    if src == dst:
        return np.asarray(labels)
    idx = np.floor(src.metric_to_index(dst.centers().reshape(-1, 3)) + 0.5).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < np.asarray(src.shape)), axis=1)
    out = np.full(len(idx), fill, dtype=np.asarray(labels).dtype)
    out[inside] = np.asarray(labels)[tuple(idx[inside].T)]
    return out.reshape(dst.shape)


def flow_at_points(flow_mps: np.ndarray, grid: VoxelGridSpec, xyz: np.ndarray) -> np.ndarray:
    """``(P, 3)`` m/s of the voxel holding each point (zero outside the grid)."""
    idx = np.floor(grid.metric_to_index(np.asarray(xyz, np.float64))).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < np.asarray(grid.shape)), axis=1)
    out = np.zeros((len(idx), 3), np.float32)
    out[inside] = flow_mps[tuple(idx[inside].T)]
    return out


def _geometric_only(binary: dict) -> dict:
    """A binary (free/occupied) result in the 10-class layout: IoU/precision/recall, no mIoU."""
    return {"iou": binary["iou"], "precision": binary["precision"], "recall": binary["recall"],
            "miou": float("nan"), "per_class_iou": {n: float("nan") for n in CLASS_NAMES[1:]},
            "num_frames": binary["num_frames"], "num_voxels": binary["num_voxels"]}


def evaluate_outputs(frames: list, outputs: OutputsBag, grid: VoxelGridSpec, method: str, semantic: bool,
                     dt_s: float, train_frames: list | None = None) -> Evaluation:
    """Score ``outputs`` on ``frames`` (model) and run the baselines of :mod:`mv4d_core.eval.baselines`.

    ``semantic``: the model has a semantic head (else occupancy is scored geometrically only and
    mIoU is n/a). ``train_frames``: frames to fit the constant-depth baseline on (default: the
    evaluation frames, flagged in the notes).
    """
    from mv4d_core.eval.baselines import evaluate_baselines, frame_depth_targets
    from mv4d_core.eval.metrics import DepthMetrics, FlowMetrics, OccupancyMetrics
    from mv4d_core.eval.report import baseline_methods

    notes: list[str] = []
    depth_acc = DepthMetrics()
    occ_sem = OccupancyMetrics()
    occ_bin = OccupancyMetrics(2, 0, class_names=["free", "occupied"])
    flow_acc = FlowMetrics()
    scored = []
    missing_out = flow_mismatch = 0
    for frame in frames:
        out: BagOutputs | None = outputs.for_frame(frame)
        if out is None:
            missing_out += 1
            continue
        scored.append(frame)
        target = frame_depth_targets(frame)
        if target is not None:
            h, w = frame.image_size
            for c, cam in enumerate(frame.camera_names):
                if cam in out.depth_m:
                    depth_acc.update(upsample_depth(out.depth_m[cam], w, h), target[c], camera=cam)
        gt = frame.gt
        if gt is not None and gt.occupancy is not None and out.occupied is not None:
            gt_grid = gt.occupancy_grid or grid
            pred_labels = out.labels if semantic else out.occupied.astype(np.uint8)
            pred_on_gt = labels_on_grid(pred_labels, grid, gt_grid)
            gt_occ = np.asarray(gt.occupancy)
            gt_bin = np.where(gt_occ == IGNORE, IGNORE, (gt_occ != FREE).astype(np.uint8))
            occ_bin.update((pred_on_gt != FREE).astype(np.uint8), gt_bin)
            if semantic:
                occ_sem.update(pred_on_gt, gt.occupancy)
        if gt is not None and gt.point_flow_m is not None and out.flow_mps is not None:
            if len(gt.point_flow_m) != len(frame.lidar_xyz):
                flow_mismatch += 1
            else:
                pred = flow_at_points(out.flow_mps, grid, frame.lidar_xyz) * dt_s
                flow_acc.update(pred, gt.point_flow_m)
    if missing_out:
        notes.append(f"{missing_out} frame(s) had no outputs in the bag (skipped by `mv4d infer`) and were not scored")
    if flow_mismatch:
        notes.append(f"flow not scored on {flow_mismatch} frame(s): LiDAR point count differs from the GT sidecar")
    model: dict = {}
    depth = depth_acc.compute()
    if depth["num_images"]:
        model["depth"] = depth
    if occ_bin.num_frames:
        model["occupancy"] = occ_sem.compute() if semantic else _geometric_only(occ_bin.compute())
        if semantic:
            model["occupancy"]["iou"] = occ_bin.compute()["iou"]
    flow = flow_acc.compute()
    if flow["all"]["num_points"]:
        model["flow"] = flow
        notes.append("predicted flow is the published flow cloud (voxels below the node's min_speed_mps read as 0), "
                     f"sampled at each LiDAR point's voxel and multiplied by dt = {dt_s:.3f} s")
    if not semantic and "occupancy" in model:
        notes.append("the model has no semantic head: occupancy is scored geometrically (IoU, precision, recall); "
                     "mIoU and per-class IoU are n/a")
    baselines = evaluate_baselines(scored, train_frames=train_frames)
    if baselines.get("constant_depth_fit_on_eval"):
        notes.append("the constant-depth baseline is the median reference depth of the evaluated frames themselves "
                     "(an optimistic baseline)")
    results = {method: model, **baseline_methods(baselines)}
    return Evaluation(results=results, notes=notes, frames=len(scored), semantic=semantic)


def headline(ev: Evaluation) -> dict[str, float]:
    """A few numbers for the console: model depth AbsRel / δ1, occupancy IoU, dynamic flow EPE."""
    model = next(iter(ev.results.values()))
    out: dict[str, float] = {}
    if "depth" in model:
        out["depth AbsRel"] = model["depth"]["metric"]["abs_rel"]
        out["depth d<1.25"] = model["depth"]["metric"]["a1"]
    if "occupancy" in model:
        out["occupancy IoU"] = model["occupancy"]["iou"]
        if ev.semantic:
            out["occupancy mIoU"] = model["occupancy"]["miou"]
    if "flow" in model:
        out["flow EPE3D dynamic [m]"] = model["flow"]["dynamic"]["epe3d"]
    return {k: v for k, v in out.items() if v is not None and not math.isnan(v)}
