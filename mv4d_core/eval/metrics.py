"""Evaluation metrics: occupancy IoU / mIoU (Occ3D + SelfOcc protocol), depth (AbsRel .. δ³), scene flow.

Aggregation over many frames (each accumulator documents its own):

* occupancy: one confusion matrix summed over all frames (Occ3D ``eval``): IoU = TP / (TP+FP+FN)
  of the summed counts, not a mean of per-frame IoUs;
* depth: errors averaged over the valid pixels of each image, then over images (monodepth2 /
  SelfOcc), metric and per-image median-scaled;
* flow: errors averaged over all points of all frames (point-weighted), with a dynamic/static split.

Everything is numpy; pass ``tensor.cpu().numpy()``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from mv4d_core.data.classes import CLASS_NAMES, FREE, IGNORE, NUM_CLASSES
from mv4d_core.geometry.voxel_grid import VoxelGridSpec

# ---------------------------------------------------------------------------------------------- occupancy


class OccupancyMetrics:
    """Confusion-matrix accumulator for semantic (or binary) occupancy.

    Args:
        num_classes: labels are ``0 .. num_classes-1``; one of them is ``free_class``
            (default: the mv4d classes of :mod:`mv4d_core.data.classes`, ``FREE = 0``).
        free_class: the empty label (mv4d: 0; Occ3D: 17; binary occupancy: 0).
        class_names: optional names for the per-class dict (default the mv4d names, else ``str(id)``).
        ignore_index: GT voxels with this label are skipped (mv4d ``IGNORE`` = 255); None: none.
    ``update(pred (X, Y, Z) int, gt (X, Y, Z) int, mask (X, Y, Z) bool | None)`` (``mask`` e.g. the
    Occ3D camera-visibility mask: only True voxels count); ``compute()``:
    ``iou`` geometric (occupied = not free), ``precision``, ``recall``, ``miou`` over the non-free
    classes present in GT or prediction (NaN classes left out), ``per_class_iou``, ``num_frames``,
    ``num_voxels``.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, free_class: int = FREE,
                 class_names: Sequence[str] | None = None, ignore_index: int | None = IGNORE):
        if class_names is None and num_classes == NUM_CLASSES:
            class_names = CLASS_NAMES
        if not 0 <= free_class < num_classes:
            raise ValueError(f"free_class {free_class} outside 0..{num_classes - 1}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.free_class = free_class
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.ignore_index = ignore_index
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)  # [gt, pred]
        self.num_frames = 0

    def update(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> None:
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"occupancy pred {pred.shape} and gt {gt.shape} differ in shape")
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != gt.shape:
                raise ValueError(f"occupancy mask {mask.shape} does not match gt {gt.shape}")
            pred, gt = pred[mask], gt[mask]
        pred = pred.reshape(-1).astype(np.int64)
        gt = gt.reshape(-1).astype(np.int64)
        if self.ignore_index is not None:
            keep = gt != self.ignore_index
            pred, gt = pred[keep], gt[keep]
        for name, a in (("pred", pred), ("gt", gt)):
            if a.size and (a.min() < 0 or a.max() >= self.num_classes):
                raise ValueError(f"occupancy {name} labels must be in 0..{self.num_classes - 1}, "
                                 f"got {a.min()}..{a.max()}")
        self.confusion += np.bincount(gt * self.num_classes + pred,
                                      minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)
        self.num_frames += 1

    def compute(self) -> dict:
        cm = self.confusion.astype(np.float64)
        f = self.free_class
        occ = np.ones(self.num_classes, dtype=bool)
        occ[f] = False
        tp = cm[np.ix_(occ, occ)].sum()
        fp = cm[f, occ].sum()
        fn = cm[occ, f].sum()
        diag = np.diag(cm)
        union = cm.sum(0) + cm.sum(1) - diag
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = np.where(union > 0, diag / union, np.nan)
        sem = per_class[occ]
        return {
            "iou": _ratio(tp, tp + fp + fn),
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "miou": float(np.nanmean(sem)) if np.any(np.isfinite(sem)) else float("nan"),
            "per_class_iou": {self.class_names[i]: float(per_class[i]) for i in range(self.num_classes) if i != f},
            "num_frames": self.num_frames,
            "num_voxels": int(cm.sum()),
        }


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


def occupancy_iou(pred_occupied: np.ndarray, gt_occupied: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Geometric IoU of two boolean ``(X, Y, Z)`` grids (NaN when both are empty)."""
    m = OccupancyMetrics(2, 0, ignore_index=None)
    m.update(np.asarray(pred_occupied, dtype=np.int64), np.asarray(gt_occupied, dtype=np.int64), mask)
    return m.compute()["iou"]


def selfocc_protocol_occupied(sdf: np.ndarray, top_layers: int = 4, border_voxels: int = 6) -> np.ndarray:
    """SelfOcc ``eval_iou.py`` rule on an ``(X, Y, Z)`` SDF on the evaluation grid: occupied =
    ``sdf <= 0``, then the top ``top_layers`` z layers and a ``border_voxels`` x/y border are
    forced empty (Occ3D grid: 4 layers = z >= 12, 6 voxels = 2.4 m)."""
    occ = np.asarray(sdf) <= 0
    if top_layers > 0:
        occ[:, :, occ.shape[2] - top_layers:] = False
    if border_voxels > 0:
        b = border_voxels
        occ[:b] = False
        occ[-b:] = False
        occ[:, :b] = False
        occ[:, -b:] = False
    return occ


def selfocc_protocol_labels(sdf: np.ndarray, free_class: int, semantics: np.ndarray | None = None,
                            occupied_class: int = 0, top_layers: int = 4, border_voxels: int = 6) -> np.ndarray:
    """Labels ``(X, Y, Z)`` for :class:`OccupancyMetrics` under the SelfOcc protocol: predicted class
    (``semantics`` ``(X, Y, Z)`` or ``occupied_class``) where occupied, ``free_class`` elsewhere."""
    occ = selfocc_protocol_occupied(sdf, top_layers, border_voxels)
    cls = np.full(occ.shape, occupied_class, dtype=np.int64) if semantics is None else np.asarray(semantics, np.int64)
    return np.where(occ, cls, free_class)


def resample_to_grid(volume: np.ndarray, src: VoxelGridSpec, dst: VoxelGridSpec, fill: float = np.inf) -> np.ndarray:
    """Trilinear resampling of an ``(X, Y, Z)`` field on ``src`` at the voxel centres of ``dst``
    (both in the same frame); centres outside ``src`` get ``fill`` (SDF: +inf = empty).
    Clamped at the outermost ``src`` centres (half a voxel of extrapolation)."""
    from scipy.ndimage import map_coordinates

    volume = np.asarray(volume, dtype=np.float64)
    if volume.shape != src.shape:
        raise ValueError(f"volume {volume.shape} does not match source grid {src.shape}")
    centres = dst.centers().reshape(-1, 3)
    idx = src.metric_to_index(centres)
    inside = np.all((idx >= -0.5) & (idx <= np.asarray(src.shape) - 0.5), axis=1)
    idx = np.clip(idx, 0, np.asarray(src.shape) - 1)
    out = map_coordinates(volume, idx.T, order=1, mode="nearest")
    out[~inside] = fill
    return out.reshape(dst.shape)


# ---------------------------------------------------------------------------------------------- depth

DEPTH_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


def depth_metrics(pred_m: np.ndarray, gt_m: np.ndarray, median_scaling: bool = False, min_gt_m: float = 1.0,
                  max_gt_m: float = 80.0, pred_min_m: float = 1e-3, pred_max_m: float = 80.0,
                  valid: np.ndarray | None = None) -> dict | None:
    """AbsRel, SqRel, RMSE [m], RMSE log, δ<1.25^k (``a1..a3``) of one image (any matching shapes).

    GT kept for ``min_gt_m < d* < max_gt_m`` (finite), prediction clamped to
    ``[pred_min_m, pred_max_m]`` (SelfOcc). ``median_scaling`` multiplies the prediction by
    ``median(d*) / median(d)`` over the valid pixels (before clamping). Returns None when the
    image has no valid pixel.
    """
    pred = np.asarray(pred_m, dtype=np.float64)
    gt = np.asarray(gt_m, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"depth pred {pred.shape} and gt {gt.shape} differ in shape")
    m = np.isfinite(gt) & (gt > min_gt_m) & (gt < max_gt_m) & np.isfinite(pred)
    if valid is not None:
        m &= np.asarray(valid, dtype=bool)
    if not m.any():
        return None
    p, g = pred[m], gt[m]
    if median_scaling:
        med = np.median(p)
        p = p * (np.median(g) / med) if med > 0 else p
    p = np.clip(p, pred_min_m, pred_max_m)
    thresh = np.maximum(p / g, g / p)
    return {
        "abs_rel": float(np.mean(np.abs(p - g) / g)),
        "sq_rel": float(np.mean((p - g) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25**2)),
        "a3": float(np.mean(thresh < 1.25**3)),
    }


class DepthMetrics:
    """Per-image depth metrics averaged over images, overall and per camera, metric and median-scaled.

    ``update(pred_m (H, W), gt_m (H, W), camera: str | None = None, valid=None)`` (images with no
    valid GT pixel are skipped and counted in ``num_skipped``); ``compute()`` ->
    ``{"metric": {key: mean}, "median": {...}, "per_camera": {cam: {"metric": .., "median": ..}},
    "num_images", "num_skipped"}`` with keys :data:`DEPTH_KEYS`.
    """

    def __init__(self, **depth_kwargs):
        self.kwargs = depth_kwargs
        self._rows: dict[str, dict[str, list]] = defaultdict(lambda: {"metric": [], "median": []})
        self.num_skipped = 0

    def update(self, pred_m, gt_m, camera: str | None = None, valid=None) -> None:
        raw = depth_metrics(pred_m, gt_m, False, valid=valid, **self.kwargs)
        if raw is None:
            self.num_skipped += 1
            return
        med = depth_metrics(pred_m, gt_m, True, valid=valid, **self.kwargs)
        key = camera if camera is not None else ""
        self._rows[key]["metric"].append(raw)
        self._rows[key]["median"].append(med)

    @staticmethod
    def _mean(rows: list[dict]) -> dict:
        return {k: float(np.mean([r[k] for r in rows])) if rows else float("nan") for k in DEPTH_KEYS}

    def compute(self) -> dict:
        all_metric = [r for v in self._rows.values() for r in v["metric"]]
        all_median = [r for v in self._rows.values() for r in v["median"]]
        return {
            "metric": self._mean(all_metric),
            "median": self._mean(all_median),
            "per_camera": {cam: {"metric": self._mean(v["metric"]), "median": self._mean(v["median"])}
                           for cam, v in sorted(self._rows.items()) if cam},
            "num_images": len(all_metric),
            "num_skipped": self.num_skipped,
        }


# ---------------------------------------------------------------------------------------------- scene flow

FLOW_KEYS = ("epe3d", "acc_strict", "acc_relax", "outliers")


def flow_point_stats(pred_m: np.ndarray, gt_m: np.ndarray, eps: float = 1e-8) -> dict[str, np.ndarray]:
    """Per-point EPE and criteria for displacements ``(P, 3)`` in metres (between the two frames).

    ``acc_strict``: EPE < 0.05 m or relative error < 5 %; ``acc_relax``: < 0.1 m or < 10 %;
    ``outliers``: EPE > 0.3 m or relative > 10 % (FlowNet3D convention). Relative error is
    ``EPE / |gt|``; on static points (``|gt|`` ~ 0) it is huge, so there only the metric
    thresholds can pass — read the dynamic/static split, not just the total.
    """
    pred = np.asarray(pred_m, dtype=np.float64).reshape(-1, 3)
    gt = np.asarray(gt_m, dtype=np.float64).reshape(-1, 3)
    if pred.shape != gt.shape:
        raise ValueError(f"flow pred {pred.shape} and gt {gt.shape} differ in shape")
    epe = np.linalg.norm(pred - gt, axis=1)
    rel = epe / (np.linalg.norm(gt, axis=1) + eps)
    return {
        "epe3d": epe,
        "acc_strict": ((epe < 0.05) | (rel < 0.05)).astype(np.float64),
        "acc_relax": ((epe < 0.1) | (rel < 0.1)).astype(np.float64),
        "outliers": ((epe > 0.3) | (rel > 0.1)).astype(np.float64),
    }


class FlowMetrics:
    """Point-weighted scene-flow metrics over all frames, split into dynamic and static points.

    ``update(pred_m (P, 3), gt_m (P, 3), dynamic (P,) bool | None, valid (P,) bool | None)``;
    without ``dynamic`` a point is dynamic when ``|gt| >= dynamic_threshold_m``.
    ``compute()`` -> ``{"all" | "dynamic" | "static": {epe3d, acc_strict, acc_relax, outliers,
    num_points}}`` (NaN where a split is empty).
    """

    def __init__(self, dynamic_threshold_m: float = 0.05):
        self.dynamic_threshold_m = dynamic_threshold_m
        self._sums = {s: dict.fromkeys(FLOW_KEYS, 0.0) for s in ("all", "dynamic", "static")}
        self._counts = dict.fromkeys(("all", "dynamic", "static"), 0)

    def update(self, pred_m, gt_m, dynamic=None, valid=None) -> None:
        stats = flow_point_stats(pred_m, gt_m)
        n = len(stats["epe3d"])
        gt = np.asarray(gt_m, dtype=np.float64).reshape(-1, 3)
        dyn = (np.linalg.norm(gt, axis=1) >= self.dynamic_threshold_m) if dynamic is None \
            else np.asarray(dynamic, dtype=bool).reshape(-1)
        keep = np.ones(n, bool) if valid is None else np.asarray(valid, dtype=bool).reshape(-1)
        if dyn.shape != (n,) or keep.shape != (n,):
            raise ValueError(f"dynamic/valid masks must be ({n},)")
        for split, m in (("all", keep), ("dynamic", keep & dyn), ("static", keep & ~dyn)):
            self._counts[split] += int(m.sum())
            for k in FLOW_KEYS:
                self._sums[split][k] += float(stats[k][m].sum())

    def compute(self) -> dict:
        out = {}
        for split, sums in self._sums.items():
            c = self._counts[split]
            out[split] = {k: (v / c if c else float("nan")) for k, v in sums.items()}
            out[split]["num_points"] = c
        return out
