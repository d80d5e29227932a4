"""PNG panels of one frame: cameras with predicted depth, BEV occupancy, BEV flow (matplotlib, Agg).

BEV convention: base_link x (forward) points UP, y (left) points LEFT, so the picture is what a
driver sees from above; the ego vehicle sits at the origin (white triangle pointing forward).
Axis labels show base_link metres. Volumes are ``(X, Y, Z)`` on a :class:`VoxelGridSpec`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mv4d_core.data.classes import CLASS_NAMES, FREE, IGNORE, NUM_CLASSES, PALETTE
from mv4d_core.geometry.voxel_grid import VoxelGridSpec

#: Depth colour range [m] shared by prediction and reference so they compare by eye.
DEPTH_RANGE_M = (1.0, 50.0)
#: Voxels (GT or predicted) moving faster than this get a flow arrow [m/s].
ARROW_MIN_SPEED_MPS = 0.5


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------------------------- BEV helpers


def bev_top_labels(labels: np.ndarray, occupied: np.ndarray) -> np.ndarray:
    """``(X, Y)`` class of the highest occupied voxel of each column (:data:`FREE` where empty)."""
    occupied = np.asarray(occupied, bool)
    z = occupied.shape[2] - 1 - np.argmax(occupied[:, :, ::-1], axis=2)
    top = np.take_along_axis(np.asarray(labels), z[..., None], axis=2)[..., 0]
    return np.where(occupied.any(axis=2), top, FREE).astype(np.uint8)


def bev_height_m(occupied: np.ndarray, grid: VoxelGridSpec) -> np.ndarray:
    """``(X, Y)`` base_link z [m] of the top of the highest occupied voxel (NaN where empty)."""
    occupied = np.asarray(occupied, bool)
    z = occupied.shape[2] - 1 - np.argmax(occupied[:, :, ::-1], axis=2)
    top = grid.range_min[2] + (z + 1) * grid.voxel_size[2]
    return np.where(occupied.any(axis=2), top, np.nan)


def class_rgb(bev_labels: np.ndarray, background=(255, 255, 255)) -> np.ndarray:
    """``(X, Y)`` labels -> ``(X, Y, 3)`` uint8 with the class palette (free/ignore -> ``background``)."""
    lab = np.asarray(bev_labels)
    rgb = np.empty(lab.shape + (3,), np.uint8)
    rgb[:] = background
    ok = (lab != FREE) & (lab != IGNORE) & (lab < NUM_CLASSES)
    rgb[ok] = PALETTE[lab[ok]]
    return rgb


def height_rgb(height_m: np.ndarray, grid: VoxelGridSpec, background=(255, 255, 255)) -> np.ndarray:
    """``(X, Y)`` heights -> ``(X, Y, 3)`` uint8 (viridis over the grid's z range; NaN -> background)."""
    plt = _plt()
    lo, hi = grid.range_min[2], grid.range_max[2]
    t = np.clip((np.nan_to_num(height_m, nan=lo) - lo) / (hi - lo), 0, 1)
    rgb = (plt.get_cmap("viridis")(t)[..., :3] * 255).astype(np.uint8)
    rgb[~np.isfinite(height_m)] = background
    return rgb


def _bev_extent(grid: VoxelGridSpec) -> list[float]:
    # Plot coordinates: horizontal = -y (so +y, left, is on the left), vertical = x (forward up).
    return [-grid.range_max[1], -grid.range_min[1], grid.range_min[0], grid.range_max[0]]


def bev_image(rgb_xy: np.ndarray) -> np.ndarray:
    """``(X, Y, ...)`` grid-indexed BEV -> image rows/columns: row 0 = largest x (top, forward),
    column 0 = largest y (left)."""
    return np.asarray(rgb_xy)[::-1, ::-1]


def show_bev(ax, rgb_xy: np.ndarray, grid: VoxelGridSpec, title: str) -> None:
    """Draw an ``(X, Y, 3)`` BEV image with x up and y left, base_link metre ticks and the ego marker."""
    from matplotlib.ticker import FuncFormatter

    ax.imshow(bev_image(rgb_xy), extent=_bev_extent(grid), origin="upper", interpolation="nearest")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{-v + 0.0:g}"))
    ax.set_xlabel("y [m] (left is +y)")
    ax.set_ylabel("x [m] (forward)")
    ax.set_title(title, fontsize=10)
    ax.plot([0], [0], marker="^", markersize=9, color="white", markeredgecolor="black")


def _class_legend(fig, labels_present) -> None:
    from matplotlib.patches import Patch

    ids = [int(i) for i in sorted(set(int(v) for v in labels_present)) if i not in (FREE, IGNORE) and i < NUM_CLASSES]
    if ids:
        fig.legend(handles=[Patch(color=PALETTE[i] / 255.0, label=CLASS_NAMES[i]) for i in ids],
                   loc="lower center", ncol=min(len(ids), 9), fontsize=8, frameon=False)


# ---------------------------------------------------------------------------------------------- panels


def _depth_colors(depth_m: np.ndarray) -> np.ndarray:
    plt = _plt()
    lo, hi = DEPTH_RANGE_M
    d = np.asarray(depth_m, np.float64)
    t = np.clip((np.log(np.clip(np.nan_to_num(d, nan=hi, posinf=hi), lo, hi)) - np.log(lo)) / np.log(hi / lo), 0, 1)
    rgb = plt.get_cmap("turbo_r")(t)[..., :3]
    rgb[~np.isfinite(d) | (d <= 0)] = 0.0
    return rgb


def camera_depth_panel(frame, depth_m: dict[str, np.ndarray], path: str | Path, title: str,
                       reference: np.ndarray | None = None, reference_label: str = "GT depth") -> Path:
    """Per camera: the image, the predicted depth and (optionally) the reference depth, side by side.

    ``depth_m``: camera -> ``(h, w)`` predicted depth; ``reference`` ``(N, H, W)`` (exact GT, or a
    sparse LiDAR depth image where 0 = no return, drawn as dots over the darkened image)."""
    plt = _plt()
    cams = list(frame.camera_names)
    ncol = 3 if reference is not None else 2
    cols_per_row = 2 if len(cams) > 3 else 1  # two cameras per figure row -> a compact 3 x 2 layout
    nrows = int(np.ceil(len(cams) / cols_per_row))
    h, w = frame.image_size
    fig_w = 3.2 * ncol * cols_per_row
    fig_h = nrows * 3.2 * h / w + 1.2
    fig, axes = plt.subplots(nrows, ncol * cols_per_row, figsize=(fig_w, fig_h), squeeze=False)
    for i, cam in enumerate(cams):
        r, c0 = divmod(i, cols_per_row)
        c0 *= ncol
        ax = axes[r, c0]
        ax.imshow(frame.images[i])
        ax.set_title(cam, fontsize=8)
        pred = depth_m.get(cam)
        ax = axes[r, c0 + 1]
        if pred is not None:
            ax.imshow(_depth_colors(pred), extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
        ax.set_title("predicted depth" if pred is not None else "no depth output", fontsize=8)
        if reference is not None:
            ax = axes[r, c0 + 2]
            ref = np.asarray(reference[i], np.float64)
            sparse = np.mean(np.isfinite(ref) & (ref > 0)) < 0.5
            if sparse:
                ax.imshow((frame.images[i] * 0.35).astype(np.uint8))
                v, u = np.nonzero(np.isfinite(ref) & (ref > 0))
                ax.scatter(u, v, c=_depth_colors(ref[v, u]), s=1.0, linewidths=0)
                ax.set_xlim(-0.5, w - 0.5)
                ax.set_ylim(h - 0.5, -0.5)
            else:
                ax.imshow(_depth_colors(ref), interpolation="nearest")
            ax.set_title(reference_label, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title}\ndepth colours: red = {DEPTH_RANGE_M[0]:g} m ... blue = {DEPTH_RANGE_M[1]:g} m "
                 "(log scale), black = no value", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def bev_occupancy_panel(occupied: np.ndarray, labels: np.ndarray | None, grid: VoxelGridSpec, path: str | Path,
                        title: str, gt_occupancy: np.ndarray | None = None,
                        gt_grid: VoxelGridSpec | None = None) -> Path:
    """Predicted BEV occupancy (by class with a semantic head, else by height) next to the GT.

    Without semantics the GT is shown both by class and by height so the height views compare."""
    plt = _plt()
    gt_grid = gt_grid or grid
    panels = []
    if gt_occupancy is not None:
        gt_occ = (gt_occupancy != FREE) & (gt_occupancy != IGNORE)
        panels.append((class_rgb(bev_top_labels(gt_occupancy, gt_occ)), gt_grid, "ground truth (class of top voxel)"))
    if labels is not None:
        panels.append((class_rgb(bev_top_labels(labels, occupied)), grid, "prediction (class of top voxel)"))
    else:
        panels.append((height_rgb(bev_height_m(occupied, grid), grid), grid,
                       "prediction (height of top voxel; no semantic head)"))
        if gt_occupancy is not None:
            panels.append((height_rgb(bev_height_m(gt_occ, gt_grid), gt_grid), gt_grid,
                           "ground truth (height of top voxel)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 5.6), squeeze=False)
    for ax, (rgb, g, t) in zip(axes[0], panels):
        show_bev(ax, rgb, g, t)
    present = []
    if gt_occupancy is not None:
        present += list(np.unique(gt_occupancy))
    if labels is not None:
        present += list(np.unique(labels[occupied]))
    _class_legend(fig, present)
    if labels is None:
        lo, hi = grid.range_min[2], grid.range_max[2]
        fig.text(0.99, 0.01, f"height colours: viridis {lo:g} m (purple) ... {hi:g} m (yellow)", ha="right",
                 fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, path)


def bev_flow_arrows(occupied: np.ndarray, flow_mps: np.ndarray, grid: VoxelGridSpec,
                    min_speed_mps: float = ARROW_MIN_SPEED_MPS) -> tuple[np.ndarray, np.ndarray]:
    """Column-mean velocity of the occupied voxels faster than ``min_speed_mps``.

    Returns ``(xy (M, 2) base_link column centres, v_xy (M, 2) m/s)``."""
    occupied = np.asarray(occupied, bool)
    speed = np.linalg.norm(flow_mps, axis=-1)
    moving = occupied & (speed >= min_speed_mps)
    count = moving.sum(axis=2)
    cols = np.argwhere(count > 0)
    if len(cols) == 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    v_sum = (flow_mps[..., :2] * moving[..., None]).sum(axis=2)
    v = v_sum[cols[:, 0], cols[:, 1]] / count[cols[:, 0], cols[:, 1], None]
    centres = grid.index_to_metric(np.concatenate([cols, np.zeros((len(cols), 1), np.int64)], 1))[:, :2]
    return centres, v


def flow_panel(pred_occupied: np.ndarray, pred_flow_mps: np.ndarray, grid: VoxelGridSpec, path: str | Path,
               title: str, gt_occupancy: np.ndarray | None = None, gt_flow_mps: np.ndarray | None = None,
               gt_grid: VoxelGridSpec | None = None) -> Path:
    """BEV quiver of predicted (and GT) object velocity over the occupancy; arrow = 1 s of motion."""
    plt = _plt()
    gt_grid = gt_grid or grid
    panels = []
    if gt_occupancy is not None and gt_flow_mps is not None:
        gt_occ = (gt_occupancy != FREE) & (gt_occupancy != IGNORE)
        panels.append((gt_occ, gt_flow_mps, gt_grid, "ground-truth flow", "tab:green"))
    panels.append((np.asarray(pred_occupied, bool), pred_flow_mps, grid, "predicted flow", "tab:red"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 5.6), squeeze=False)
    for ax, (occ, flow, g, t, colour) in zip(axes[0], panels):
        bg = np.where(occ.any(axis=2)[..., None], np.uint8(190), np.uint8(255)).repeat(3, -1)
        xy, v = bev_flow_arrows(occ, flow, g)
        show_bev(ax, bg, g, f"{t} ({len(xy)} moving columns)")
        if len(xy):
            # plot coords: horizontal = -y, vertical = x
            ax.quiver(-xy[:, 1], xy[:, 0], -v[:, 1], v[:, 0], color=colour, angles="xy", scale_units="xy",
                      scale=1.0, width=0.004)
    fig.suptitle(f"{title}\narrows: column-mean velocity of occupied voxels faster than "
                 f"{ARROW_MIN_SPEED_MPS:g} m/s, length = 1 s of motion; grey = occupied", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
