"""The one scoring path: a method's published outputs for a frame -> every metric group.

``mv4d eval`` (over a :class:`~mv4d_core.pipeline.PerceptionPipeline`), the demo (decoding the bag
written by ``mv4d infer``) and the baselines all hand a :class:`Prediction` per frame to
:class:`Scorer`, so the same outputs give the same numbers whichever tool produced them.

Rules, per frame:

* ``depth`` (vs exact synthetic GT depth) and ``depth_lidar`` (vs the LiDAR projected into each camera
  at the frame's image size): the predicted map, at any resolution, is bilinearly upsampled to the
  reference size (pixel-centre aligned); GT kept 1-80 m; metric and per-image median-scaled.
* Held-out rings (real data whose cloud has a ring index, no exact GT): every method, the network
  and the LiDAR baselines alike, receives the odd rings only (:func:`heldout_input`) and depth is
  scored against the even rings' projections as ``depth_lidar_heldout_rings`` (``depth_lidar`` is
  not scored then: it would grade LiDAR methods on their own input). Synthetic data: the full LiDAR
  in, scored against exact GT.
* ``occupancy``: the published occupancy (``prob >= threshold``) moved to the GT grid by nearest voxel,
  binary IoU / precision / recall over the GT-known voxels (``IGNORE`` excluded);
  ``occupancy_selfocc``: the same under SelfOcc's protocol (top 1.6 m of z layers and a 2.4 m x/y
  border forced empty: 4 layers / 6 voxels on Occ3D).
* ``flow``: the published flow (occupied voxels at or above ``flow.min_speed_mps``, 0 where the motion
  gate says static; 0 elsewhere, as a subscriber reads the flow cloud) of the voxel holding each LiDAR
  point, times the interval to the next frame, vs ``gt.point_flow_m`` (object motion, ego removed);
  points outside the grid read 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mv4d_core.data.classes import CLASS_NAMES, FREE, IGNORE, ROAD
from mv4d_core.eval.baselines import ConstantDepthBaseline, ground_plane_depth, ground_slab_occupancy
from mv4d_core.eval.metrics import DepthMetrics, FlowMetrics, OccupancyMetrics, selfocc_protocol_occupied
from mv4d_core.geometry.voxel_grid import VoxelGridSpec

_COMPLETION = "baseline: lidar_completion/"
GROUPS: tuple[str, ...] = ("depth", "depth_lidar", "depth_lidar_heldout_rings", "occupancy", "occupancy_selfocc",
                           "flow")
DEPTH_GROUPS: tuple[str, ...] = ("depth", "depth_lidar", "depth_lidar_heldout_rings")
#: Sweeps (current + previous, ego-compensated) of the ``baseline: lidar_accumulated`` occupancy.
ACCUMULATED_SWEEPS = 5


@dataclass
class Prediction:
    """What one method publishes for one frame (any part may be None: not scored).

    * ``depth_m`` (N, h, w) optical-z metres in the frame's camera order (NaN = no depth);
    * ``occupied`` (X, Y, Z) bool on ``grid``;
    * ``flow_mps`` (X, Y, Z, 3) m/s on ``grid``, 0 where nothing is published.
    """

    depth_m: np.ndarray | None = None
    occupied: np.ndarray | None = None
    flow_mps: np.ndarray | None = None
    grid: VoxelGridSpec | None = None


def published_prediction(out, config) -> Prediction:
    """:class:`~mv4d_core.pipeline.outputs.PerceptionOutputs` -> what the node publishes of it: the depth
    images (non-positive -> NaN, REP 118), the occupied voxels and the flow cloud's voxels."""
    depth = np.where(out.depth_m > 0, out.depth_m, np.nan).astype(np.float32)
    flow = np.asarray(out.flow_mps, np.float32)
    keep = out.occupied & np.all(np.isfinite(flow), -1)
    if config.flow.min_speed_mps > 0:
        keep &= np.linalg.norm(flow, axis=-1) >= config.flow.min_speed_mps
    return Prediction(depth, out.occupied.copy(), np.where(keep[..., None], flow, 0.0).astype(np.float32), out.grid)


def upsample_depth(depth_m: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(h, w)`` depth -> ``(height, width)`` bilinear, pixel-centre aligned (NaN where a neighbour is NaN)."""
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
    idx, inside = grid.points_to_voxels(np.asarray(xyz, np.float64))
    out = np.zeros((len(idx), 3), np.float32)
    out[inside] = flow_mps[tuple(idx[inside].T)]
    return out


def occupancy_protocol_params(grid: VoxelGridSpec) -> tuple[int, int]:
    """SelfOcc's forced-empty ``(top z layers, x/y border voxels)`` scaled from Occ3D's 4 x 0.4 m and
    6 x 0.4 m to ``grid``'s voxel size."""
    return max(0, int(round(1.6 / grid.voxel_size[2]))), max(0, int(round(2.4 / grid.voxel_size[0])))


def lidar_depth_target(frame, min_depth_m: float = 1.0, max_depth_m: float = 80.0,
                       points: np.ndarray | None = None) -> np.ndarray | None:
    """``(N, H, W)`` sparse LiDAR depth of a frame (or of ``points`` (P, 3) in its base_link) at its image
    size (0 = no return), or None."""
    xyz = frame.lidar_xyz if points is None else points
    if xyz is None or len(xyz) == 0:
        return None
    from mv4d_core.geometry.lidar_projection import lidar_depth_image, project_lidar_to_cameras

    h, w = frame.image_size
    proj = project_lidar_to_cameras(np.asarray(xyz, np.float64), frame.intrinsics, frame.T_base_cam, w, h,
                                    min_depth_m, max_depth_m)
    return lidar_depth_image(proj, w, h)


def uses_heldout_rings(frame) -> bool:
    """The held-out-ring protocol applies: a ring index and no exact GT depth (real data)."""
    return (frame.lidar_ring is not None and frame.lidar_xyz is not None and len(frame.lidar_xyz) > 0
            and (frame.gt is None or frame.gt.depth_m is None))


def ring_subset(frame, odd: bool):
    """``frame`` with only its odd (or even) rings' points."""
    import dataclasses

    keep = (np.asarray(frame.lidar_ring) % 2 == 1) == odd

    def sub(a):
        return None if a is None else np.asarray(a)[keep]

    return dataclasses.replace(frame, lidar_xyz=frame.lidar_xyz[keep], lidar_intensity=sub(frame.lidar_intensity),
                               lidar_time_offset_s=sub(frame.lidar_time_offset_s), lidar_ring=sub(frame.lidar_ring))


def heldout_input(frame):
    """What every method receives of ``frame``: the odd rings under the held-out-ring protocol, else all."""
    return ring_subset(frame, odd=True) if uses_heldout_rings(frame) else frame


def _geometric(binary: dict) -> dict:
    """A binary (free/occupied) result in the mv4d class layout: IoU / precision / recall, no mIoU."""
    return {"iou": binary["iou"], "precision": binary["precision"], "recall": binary["recall"],
            "miou": float("nan"), "per_class_iou": {n: float("nan") for n in CLASS_NAMES[1:]},
            "num_frames": binary["num_frames"], "num_voxels": binary["num_voxels"]}


@dataclass
class _Method:
    depth: DepthMetrics = field(default_factory=DepthMetrics)
    depth_lidar: DepthMetrics = field(default_factory=DepthMetrics)
    depth_lidar_heldout_rings: DepthMetrics = field(default_factory=DepthMetrics)
    occupancy: OccupancyMetrics = field(default_factory=lambda: OccupancyMetrics(2, 0, ["free", "occupied"]))
    occupancy_selfocc: OccupancyMetrics = field(default_factory=lambda: OccupancyMetrics(2, 0, ["free", "occupied"]))
    flow: FlowMetrics = field(default_factory=FlowMetrics)


class Scorer:
    """Accumulates every metric group per method (methods keep the order they are first seen in).

    ``constant_fit_frames``: frames whose references fit the constant-depth baseline (default: the
    scored frames themselves, flagged in :meth:`notes` as favouring the baseline); call
    :meth:`fit_constants` before :meth:`add_baselines`.
    """

    def __init__(self, ground_z_m: float = 0.0, heldout_rings: bool = True) -> None:
        self.ground_z_m = ground_z_m
        #: Apply the held-out-ring protocol where it can apply (off: the methods saw every ring).
        self.heldout_rings = heldout_rings
        self.methods: dict[str, _Method] = {}
        self._targets: dict[int, tuple] = {}
        self.constant_depth_m: dict[str, float | None] = dict.fromkeys(DEPTH_GROUPS)
        self.constant_fit_on_eval = True
        self.flow_skipped = 0
        self.heldout_frames = 0

    # ------------------------------------------------------------------ references
    def targets(self, frame) -> dict[str, np.ndarray]:
        """Depth references of a frame by group (``depth``: exact GT; ``depth_lidar``: all rings;
        ``depth_lidar_heldout_rings``: the even rings under the held-out-ring protocol), computed once."""
        key = id(frame)
        if key not in self._targets:
            refs = {}
            if frame.gt is not None and frame.gt.depth_m is not None:
                refs["depth"] = frame.gt.depth_m
            if self.heldout_rings and uses_heldout_rings(frame):
                even = lidar_depth_target(frame, points=ring_subset(frame, odd=False).lidar_xyz)
                if even is not None:
                    refs["depth_lidar_heldout_rings"] = even
            else:
                lidar = lidar_depth_target(frame)
                if lidar is not None:
                    refs["depth_lidar"] = lidar
            self._targets[key] = (refs, frame)      # keeps the frame alive: ids stay unique
        return self._targets[key][0]

    def fit_constants(self, frames, fit_on_eval: bool = True) -> None:
        """Fit the constant-depth baseline of each reference kind on ``frames``."""
        frames = list(frames)
        self.constant_fit_on_eval = fit_on_eval
        for group in DEPTH_GROUPS:
            refs = [self.targets(f)[group] for f in frames if group in self.targets(f)]
            self.constant_depth_m[group] = ConstantDepthBaseline().fit(refs).depth_m if refs else None

    # ------------------------------------------------------------------ scoring
    def add(self, method: str, frame, pred: Prediction, dt_s: float | None,
            depth_groups: tuple[str, ...] = DEPTH_GROUPS) -> None:
        """Score one method's :class:`Prediction` for ``frame`` (the whole frame, all rings; the method
        saw :func:`heldout_input` of it); ``dt_s`` the interval to the next frame; ``depth_groups`` the
        depth references the prediction is scored against."""
        acc = self.methods.setdefault(method, _Method())
        # A LiDAR-only run publishes no depth (no camera to predict it for): nothing to score.
        if pred.depth_m is not None and len(pred.depth_m) == len(frame.camera_names):
            h, w = frame.image_size
            for group, target in self.targets(frame).items():
                if group not in depth_groups:
                    continue
                for c, cam in enumerate(frame.camera_names):
                    getattr(acc, group).update(upsample_depth(pred.depth_m[c], w, h), target[c], camera=cam)
        gt = frame.gt
        if gt is not None and gt.occupancy is not None and pred.occupied is not None:
            gt_grid = gt.occupancy_grid or pred.grid
            occ = labels_on_grid(pred.occupied.astype(np.uint8), pred.grid, gt_grid, fill=0)
            gt_occ = np.asarray(gt.occupancy)
            gt_bin = np.where(gt_occ == IGNORE, IGNORE, (gt_occ != FREE).astype(np.uint8))
            acc.occupancy.update(occ, gt_bin)
            top, border = occupancy_protocol_params(gt_grid)
            forced = selfocc_protocol_occupied(np.where(occ > 0, -1.0, 1.0), top, border)
            acc.occupancy_selfocc.update(forced.astype(np.uint8), gt_bin)
        if gt is not None and gt.point_flow_m is not None and pred.flow_mps is not None and dt_s:
            if frame.lidar_xyz is None or len(gt.point_flow_m) != len(frame.lidar_xyz) or gt.point_flow_includes_ego:
                self.flow_skipped += 1
            else:
                acc.flow.update(flow_at_points(pred.flow_mps, pred.grid, frame.lidar_xyz) * dt_s, gt.point_flow_m)

    def add_baselines(self, frame, grid: VoxelGridSpec, dt_s: float | None) -> None:
        """The trivial baselines through :meth:`add`: constant depth, ground plane, their minimum;
        all-free and ground-slab occupancy; zero flow."""
        h, w = frame.image_size
        plane = ground_plane_depth(frame.intrinsics, frame.T_base_cam, h, w, self.ground_z_m)
        occ_grid = frame.gt.occupancy_grid if frame.gt is not None and frame.gt.occupancy_grid else grid
        slab = ground_slab_occupancy(occ_grid, FREE, ROAD, self.ground_z_m) != FREE
        zero = np.zeros(occ_grid.shape + (3,), np.float32)
        consts = {g: c for g, c in self.constant_depth_m.items() if c is not None}
        for g, c in consts.items():
            self.add("baseline: constant", frame, Prediction(depth_m=np.full(plane.shape, c, np.float32)), dt_s, (g,))
        self.add("baseline: ground_plane", frame, Prediction(depth_m=plane), dt_s)
        for g, c in consts.items():
            self.add("baseline: ground_plane_or_constant", frame, Prediction(depth_m=np.minimum(plane, c)), dt_s, (g,))
        self.add("baseline: all_free", frame, Prediction(occupied=np.zeros(occ_grid.shape, bool), grid=occ_grid), dt_s)
        self.add("baseline: ground_slab", frame, Prediction(occupied=slab, grid=occ_grid), dt_s)
        self.add("baseline: zero", frame, Prediction(flow_mps=zero, grid=occ_grid), dt_s)

    def method_input(self, frame):
        """What every method receives of ``frame`` (:func:`heldout_input` unless the protocol is off)."""
        return heldout_input(frame) if self.heldout_rings else frame

    def add_lidar_baselines(self, frame, previous: list, grid: VoxelGridSpec, dt_s: float | None) -> None:
        """The classical LiDAR baselines through :meth:`add`, each on what the network gets of the LiDAR
        (:func:`heldout_input`): ``lidar_voxels`` (the current sweep's hit voxels and the ground slab),
        ``lidar_accumulated`` (the hits of the current and ``ACCUMULATED_SWEEPS - 1`` ``previous``
        frames' sweeps, newest first, ego-compensated, and the ground slab) and the two depth
        completions behind ``lidar_completion`` (nearest-pixel fill; Ku et al.'s morphological one)."""
        from mv4d_core.geometry.transforms import invert_transform, transform_points
        from mv4d_core.models.lidar_inputs import morphological_completion, nearest_fill

        seen = self.method_input(frame)
        if seen.lidar_xyz is None or len(seen.lidar_xyz) == 0:
            return
        occ_grid = frame.gt.occupancy_grid if frame.gt is not None and frame.gt.occupancy_grid else grid
        slab = ground_slab_occupancy(occ_grid, FREE, ROAD, self.ground_z_m) != FREE

        def hits(xyz):
            idx, inside = occ_grid.points_to_voxels(np.asarray(xyz, np.float64))
            m = np.zeros(occ_grid.shape, bool)
            m[tuple(idx[inside].T)] = True
            return m

        current = hits(seen.lidar_xyz)
        self.add("baseline: lidar_voxels", frame, Prediction(occupied=current | slab, grid=occ_grid), dt_s)
        acc = current.copy()
        T_cur_world = invert_transform(np.asarray(frame.T_world_base, np.float64))
        for p in previous[:ACCUMULATED_SWEEPS - 1]:
            q = self.method_input(p)
            if q.lidar_xyz is not None and len(q.lidar_xyz):
                acc |= hits(transform_points(T_cur_world @ q.T_world_base, q.lidar_xyz.astype(np.float64)))
        self.add("baseline: lidar_accumulated", frame, Prediction(occupied=acc | slab, grid=occ_grid), dt_s)
        sparse = lidar_depth_target(frame, min_depth_m=0.5, max_depth_m=100.0, points=seen.lidar_xyz)
        if sparse is not None:
            for name, fill in (("nearest", nearest_fill), ("morphological", morphological_completion)):
                dense = np.stack([fill(d) for d in sparse])
                self.add(f"{_COMPLETION}{name}", frame, Prediction(depth_m=np.where(dense > 0, dense, np.nan)), dt_s)

    # ------------------------------------------------------------------ results
    def completion_variant(self) -> str | None:
        """Which completion ``baseline: lidar_completion`` is: the one with the lower metric AbsRel on the
        first depth group both have (exact GT first)."""
        a, b = (self.methods.get(f"{_COMPLETION}{v}") for v in ("nearest", "morphological"))
        if a is None or b is None:
            return None
        for group in DEPTH_GROUPS:
            ra, rb = getattr(a, group).compute(), getattr(b, group).compute()
            if ra["num_images"] and rb["num_images"]:
                return "nearest" if ra["metric"]["abs_rel"] <= rb["metric"]["abs_rel"] else "morphological"
        return None

    def results(self) -> dict[str, dict]:
        """``{method: {group: compute()}}`` for every group a method has data in; the two completions
        appear once, as ``baseline: lidar_completion`` (see :meth:`completion_variant`)."""
        out: dict[str, dict] = {}
        variant = self.completion_variant()
        for name, acc in self.methods.items():
            if name.startswith(_COMPLETION):
                if name != f"{_COMPLETION}{variant}":
                    continue
                name = "baseline: lidar_completion"
            res = {}
            for group in GROUPS:
                val = getattr(acc, group).compute()
                if group.startswith("occupancy"):
                    if val["num_frames"] == 0:
                        continue
                    val = _geometric(val)
                elif group == "flow":
                    if val["all"]["num_points"] == 0:
                        continue
                elif val["num_images"] == 0:
                    continue
                res[group] = val
            if res:
                out[name] = res
        return out

    def notes(self) -> list[str]:
        grid_note = ("occupancy: the published occupancy (prob >= threshold) on the GT grid (nearest voxel); "
                     "binary IoU over GT-known voxels; the SelfOcc protocol also forces the top 1.6 m of z layers "
                     "and a 2.4 m x/y border empty")
        notes = [grid_note,
                 "depth: the published depth maps bilinearly upsampled to the frame's image size; GT kept 1-80 m",
                 "flow: the published flow (occupied voxels; 0 where the motion gate says static) of the voxel "
                 "holding each LiDAR point, times the frame interval"]
        if self.constant_fit_on_eval:
            notes.append("constant-depth baseline: median reference depth of the evaluated frames themselves "
                         "(fit on eval data; favours it)")
        if self.flow_skipped:
            notes.append(f"flow not scored on {self.flow_skipped} frame(s): LiDAR points do not match the flow GT")
        variant = self.completion_variant()
        if variant:
            notes.append(f"baseline: lidar_completion is the better of nearest-pixel fill and the morphological "
                         f"completion of Ku et al. 2018 on this data: {variant}")
        if any(self.methods[m].depth_lidar_heldout_rings.compute()["num_images"] for m in self.methods):
            notes.append("held-out rings: every method received the odd LiDAR rings only; depth is scored at the "
                         "even rings' projections (1-80 m)")
        return notes


def headline(results: dict[str, dict], method: str) -> dict[str, float]:
    """A few numbers for the console: depth AbsRel / δ1, occupancy IoU, dynamic flow EPE."""
    model = results.get(method, {})
    out: dict[str, float] = {}
    for group in ("depth", "depth_lidar"):
        if group in model:
            out[f"{group} AbsRel"] = model[group]["metric"]["abs_rel"]
            out[f"{group} d<1.25"] = model[group]["metric"]["a1"]
            break
    if "occupancy" in model:
        out["occupancy IoU"] = model["occupancy"]["iou"]
    if "flow" in model:
        out["flow EPE3D dynamic [m]"] = model["flow"]["dynamic"]["epe3d"]
    return {k: v for k, v in out.items() if v is not None and not math.isnan(v)}
