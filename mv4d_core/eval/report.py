"""Markdown tables of evaluation results, the model next to its baselines.

``results`` maps a method name to ``{"depth": DepthMetrics.compute(), "occupancy":
OccupancyMetrics.compute(), "flow": FlowMetrics.compute()}`` (any part may be missing), the
layout of :meth:`mv4d_core.eval.scoring.Scorer.results`.
"""

from __future__ import annotations

import math

from mv4d_core.eval.metrics import DEPTH_KEYS, FLOW_KEYS

_DEPTH_HEAD = {"abs_rel": "AbsRel ↓", "sq_rel": "SqRel ↓", "rmse": "RMSE [m] ↓", "rmse_log": "RMSE log ↓",
               "a1": "δ<1.25 ↑", "a2": "δ<1.25² ↑", "a3": "δ<1.25³ ↑"}
_FLOW_HEAD = {"epe3d": "EPE3D [m] ↓", "acc_strict": "Acc strict ↑", "acc_relax": "Acc relax ↑",
              "outliers": "Outliers ↓"}


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, int):
        return str(v)
    v = float(v)
    return "n/a" if math.isnan(v) else f"{v:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown_report(results: dict[str, dict], title: str = "mv4d evaluation", per_class: bool = True) -> str:
    """Markdown with one table per metric family (rows = methods, in the given order)."""
    out = [f"# {title}", ""]
    depth_rows = [(m, r["depth"]) for m, r in results.items() if r.get("depth")]
    for mode, label in (("metric", "metric scale"), ("median", "per-image median scaling")):
        if depth_rows:
            out += [f"## Depth ({label}; GT 1-80 m, per-image mean then mean over images)", "",
                    _table(["method", *(_DEPTH_HEAD[k] for k in DEPTH_KEYS), "images"],
                           [[m, *(_fmt(d[mode].get(k)) for k in DEPTH_KEYS), _fmt(d.get("num_images"))]
                            for m, d in depth_rows]), ""]
    occ_rows = [(m, r["occupancy"]) for m, r in results.items() if r.get("occupancy")]
    if occ_rows:
        out += ["## Occupancy (confusion summed over frames)", "",
                _table(["method", "IoU ↑", "mIoU ↑", "precision", "recall", "frames"],
                       [[m, _fmt(o["iou"]), _fmt(o["miou"]), _fmt(o["precision"]), _fmt(o["recall"]),
                         _fmt(o["num_frames"])] for m, o in occ_rows]), ""]
        if per_class:
            names = list(occ_rows[0][1]["per_class_iou"])
            out += ["### Per-class IoU", "",
                    _table(["method", *names],
                           [[m, *(_fmt(o["per_class_iou"].get(n)) for n in names)] for m, o in occ_rows]), ""]
    flow_rows = [(m, r["flow"]) for m, r in results.items() if r.get("flow")]
    if flow_rows:
        rows = []
        for m, f in flow_rows:
            for split in ("all", "dynamic", "static"):
                if split in f:
                    rows.append([m, split, *(_fmt(f[split].get(k)) for k in FLOW_KEYS),
                                 _fmt(f[split].get("num_points"))])
        out += ["## Scene flow (point-weighted over frames)", "",
                _table(["method", "points", *(_FLOW_HEAD[k] for k in FLOW_KEYS), "n"], rows), ""]
    return "\n".join(out).rstrip() + "\n"
