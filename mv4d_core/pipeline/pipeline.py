"""One rig sample in, published results out: pre-processing, engine call, post-processing.

Used unchanged by the ROS node (``mv4d_ros.perception_node``) and the offline tools (``mv4d
infer``), so a bag replay and the live node compute the same thing::

    pipeline = PerceptionPipeline(create_engine("torch", "model.pt"), PerceptionConfig())
    out = pipeline.process(frame)                 # PerceptionOutputs (base_link, numpy)
    arrays = output_arrays(out, pipeline.config)  # message-ready arrays (postprocess.py)

Temporal state: with ``temporal=True`` the engine fuses the previous frame, warped by the ego
motion ``T_prev_cur`` from the frames' ``T_world_base``. Stamps follow :mod:`mv4d_core.pipeline.stamps`:
a frame older than the previous one by more than ``config.max_clock_jump_s`` (a bag looping, a
restarted clock) resets that state first, a frame older by less is late and refused
(:class:`LateFrame`); a gap longer than ``max_gap_s`` resets too. A frame whose ego pose is unknown (``process(frame, pose_known=False)``, e.g. the live node without an
odometry sample at its stamp, or a non-finite ``T_world_base``) resets it too and leaves none
behind: it is processed on its own and the next frame starts a new sequence.

LiDAR: for an engine whose model takes the LiDAR (``engine.spec.lidar``), pre-processing turns the
frame's sweep and the previous ones (kept like the temporal state, ego-compensated with the frames'
poses) into the model's LiDAR inputs (:mod:`mv4d_core.models.lidar_inputs`). A frame without a
usable cloud is processed camera-only and counted (``stats.lidar_missing``); camera-only engines
ignore the cloud.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from mv4d_core.data.frame import FrameRecord
from mv4d_core.engines import Engine, EngineInputs, EngineOutputs
from mv4d_core.models.heads import MOVING_SPEED_MPS
from mv4d_core.models.inputs import relative_pose, resize_cameras
from mv4d_core.models.lidar_inputs import LidarStats, Sweep, build_lidar_inputs, lidar_origin
from mv4d_core.pipeline.config import ConfigError, PerceptionConfig
from mv4d_core.pipeline.outputs import PerceptionOutputs
from mv4d_core.pipeline.postprocess import (BevGrid, CubeList, backproject_depth, bev_grid, depth_image,
                                            flow_points, marker_cubes, moving_voxels, occupied_voxels, points_cloud,
                                            velocity_arrows)
from mv4d_core.pipeline.stamps import CLOCK_JUMP_BACK, LATE, classify_stamp


class FrameError(ValueError):
    """A frame does not fit the pipeline (missing camera, wrong image layout); names the cause."""


class LateFrame(FrameError):
    """A frame older than the previous one by at most ``max_clock_jump_s``: refused, state untouched."""


@dataclass
class PipelineStats:
    """Counters since construction; ``resets`` by reason (``clock_jump_back``, ``gap``, ``no_pose``,
    ``manual``); ``temporal_frames``: frames the engine fused with the previous frame's state;
    ``lidar_frames`` / ``lidar_missing``: frames a fusion engine got with / without a usable sweep;
    ``lidar_only_frames``: frames without cameras run on the LiDAR branch alone;
    ``lidar``: what cleaning did to the clouds (non-finite, subsampled, outside the grid)."""

    frames: int = 0
    temporal_frames: int = 0
    resets: dict[str, int] = field(default_factory=dict)
    lidar_frames: int = 0
    lidar_missing: int = 0
    lidar_only_frames: int = 0
    lidar: LidarStats = field(default_factory=LidarStats)


@dataclass
class Timings:
    """Wall time of the last :meth:`PerceptionPipeline.process` call, milliseconds."""

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


@dataclass
class Preprocessed:
    """Engine inputs plus what post-processing needs: RGB ``(N, h, w, 3)`` uint8 at the model size,
    and the frame's LiDAR sweep (kept as the next frame's previous sweep)."""

    inputs: EngineInputs
    images_rgb: np.ndarray
    sweep: Sweep | None = None


class PerceptionPipeline:
    """``process(frame) -> PerceptionOutputs`` around one :class:`Engine`."""

    def __init__(self, engine: Engine, config: PerceptionConfig | None = None, temporal: bool = True,
                 max_gap_s: float = 1.0) -> None:
        self.engine = engine
        self.config = config or PerceptionConfig()
        self.temporal = temporal
        self.max_gap_s = max_gap_s
        self.stats = PipelineStats()
        self.timings = Timings()
        self._prev: FrameRecord | None = None
        self._sweeps: list[Sweep] = []           # previous LiDAR sweeps, newest first
        n = engine.spec.num_cameras
        if n is not None and n != len(self.config.camera_names):
            raise ConfigError("camera_names", f"{len(self.config.camera_names)} cameras configured but the engine "
                                              f"{engine.spec.name!r} expects {n}")

    # ------------------------------------------------------------------ state
    def reset(self, reason: str = "manual") -> None:
        """Forget the previous frame (engine state included)."""
        self.engine.reset()
        self._prev = None
        self._sweeps = []
        self.stats.resets[reason] = self.stats.resets.get(reason, 0) + 1

    # ------------------------------------------------------------------ steps
    def lidar_only(self, frame: FrameRecord) -> bool:
        """True for a frame without cameras that a fusion engine can run on its LiDAR sweep alone."""
        return (len(frame.camera_names) == 0 and self.engine.spec.lidar is not None
                and frame.lidar_xyz is not None and len(frame.lidar_xyz) > 0)

    def ordered(self, frame: FrameRecord) -> FrameRecord:
        """``frame`` with its cameras in ``config.camera_names`` order (extra cameras dropped). A frame
        with no camera at all but a LiDAR sweep is kept as it is for a fusion engine: it runs on its
        LiDAR branch alone (the cameras failed; see :meth:`process`)."""
        names = list(self.config.camera_names)
        if list(frame.camera_names) == names:
            return frame
        if self.lidar_only(frame):
            return frame
        missing = [c for c in names if c not in frame.camera_names]
        if missing:
            raise FrameError(f"frame {frame.stamp_ns}: missing camera(s) {missing} (has {list(frame.camera_names)})")
        idx = [list(frame.camera_names).index(c) for c in names]
        return dataclasses.replace(
            frame, camera_names=names, images=frame.images[idx], intrinsics=frame.intrinsics[idx],
            T_base_cam=frame.T_base_cam[idx],
            camera_stamps_ns=None if frame.camera_stamps_ns is None else np.asarray(frame.camera_stamps_ns)[idx])

    def preprocess(self, frame: FrameRecord) -> Preprocessed:
        """Resize to the engine's input size and move ``K`` with it (same rule as training)."""
        h_m, w_m = self.engine.spec.image_hw
        rgb, Ks = resize_cameras(frame.images, frame.intrinsics, h_m, w_m)
        images = np.ascontiguousarray(rgb.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
        T_prev_cur = None
        if self.temporal and self._prev is not None:
            T_prev_cur = relative_pose(self._prev.T_world_base, frame.T_world_base).astype(np.float32)
        inputs = EngineInputs(images, Ks.astype(np.float32), frame.T_base_cam.astype(np.float32), T_prev_cur)
        sweep = None
        spec = self.engine.spec
        if spec.lidar is not None and frame.lidar_xyz is not None and len(frame.lidar_xyz):
            sweep = Sweep(frame.lidar_xyz, frame.lidar_intensity, frame.T_world_base, frame.stamp_ns)
            built = build_lidar_inputs(sweep, self._sweeps, lidar_origin(frame.T_base_lidar), Ks, frame.T_base_cam,
                                       (h_m, w_m), spec.lidar, spec.grid, self.stats.lidar)
            if built is not None:
                inputs.lidar_volume, inputs.lidar_depth = built
        return Preprocessed(inputs, rgb, sweep)

    def postprocess(self, frame: FrameRecord, pre: Preprocessed, out: EngineOutputs) -> PerceptionOutputs:
        """Engine arrays -> :class:`PerceptionOutputs` (occupancy mask, depth cloud)."""
        cfg = self.config
        grid = self.engine.spec.grid
        prob = np.asarray(out.occupancy_prob, np.float32)
        if prob.shape != grid.shape:
            raise FrameError(f"engine returned occupancy of shape {prob.shape}, grid is {grid.shape}")
        occupied = np.isfinite(prob) & (prob >= cfg.occupancy_threshold)
        depth = np.asarray(out.depth_m, np.float32)
        dh, dw = depth.shape[1:]
        # The model-size images and K at the depth resolution, by the one resize rule.
        colors, Kd = resize_cameras(pre.images_rgb, pre.inputs.intrinsics, dh, dw)
        xyz, rgb, cam = backproject_depth(depth, Kd, frame.T_base_cam, colors, stride=cfg.points.stride,
                                          max_depth_m=cfg.points.max_depth_m)
        motion = None if out.motion_prob is None else np.asarray(out.motion_prob, np.float32)
        return PerceptionOutputs(
            stamp_ns=int(frame.stamp_ns), frame_id=cfg.base_frame, grid=grid, occupancy_prob=prob,
            occupied=occupied, camera_names=list(frame.camera_names), depth_m=depth,
            depth_intrinsics=Kd, T_base_cam=np.asarray(frame.T_base_cam, np.float64), points_xyz=xyz,
            points_rgb=rgb, points_camera=cam, flow_mps=gated_flow(out.flow_mps, motion, cfg.flow.moving_min_prob),
            motion_prob=motion)

    def process(self, frame: FrameRecord, pose_known: bool = True) -> PerceptionOutputs:
        """Run one frame. Raises :class:`FrameError` for frames that do not fit (nothing is changed then).

        ``pose_known=False``: ``frame.T_world_base`` is a placeholder; no temporal fusion into or
        out of this frame."""
        t0 = time.perf_counter()
        frame = self.ordered(frame)
        pose_known = pose_known and bool(np.all(np.isfinite(frame.T_world_base)))
        if self._prev is not None:
            order = classify_stamp(self._prev.stamp_ns, frame.stamp_ns, self.config.max_clock_jump_s)
            dt_s = (frame.stamp_ns - self._prev.stamp_ns) * 1e-9
            if order == LATE:
                raise LateFrame(f"frame {frame.stamp_ns} is {-dt_s:.3f} s older than the previous frame "
                                f"(within max_clock_jump_s {self.config.max_clock_jump_s} s): late, dropped")
            if order == CLOCK_JUMP_BACK:
                self.reset(CLOCK_JUMP_BACK)
            elif dt_s > self.max_gap_s:
                self.reset("gap")
            elif not pose_known:
                self.reset("no_pose")
        pre = self.preprocess(frame)
        t1 = time.perf_counter()
        raw = self.engine.infer(pre.inputs)
        t2 = time.perf_counter()
        out = self.postprocess(frame, pre, raw)
        t3 = time.perf_counter()
        # Without a pose this frame cannot be the reference of the next one's ego motion.
        self._prev = frame if pose_known else None
        if self.engine.spec.lidar is not None:
            if pre.inputs.lidar_volume is None:
                self.stats.lidar_missing += 1
            else:
                self.stats.lidar_frames += 1
            keep = self.engine.spec.lidar.previous_sweeps
            self._sweeps = ([pre.sweep] + self._sweeps)[:keep] if pose_known and pre.sweep is not None else []
        self.stats.frames += 1
        self.stats.lidar_only_frames += int(self.lidar_only(frame))
        self.stats.temporal_frames += int(raw.fused_previous)
        self.timings = Timings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        return out


def gated_flow(flow_mps: np.ndarray, motion_prob: np.ndarray | None, min_prob: float) -> np.ndarray:
    """``flow_mps`` (X, Y, Z, 3), zero where ``motion_prob`` (X, Y, Z) is below ``min_prob``.

    The gate's probability read as a decision: for a voxel believed static with probability
    ``1 - p`` and moving with velocity ``v`` with probability ``p``, the point estimate with the least
    expected end-point error is the likelier of ``0`` and ``v``. The published value where it moves is
    the network's gated flow (the quantity its flow losses train)."""
    flow = np.asarray(flow_mps, np.float32)
    if motion_prob is None:
        return flow
    return np.where((np.asarray(motion_prob) >= min_prob)[..., None], flow, np.float32(0.0)).astype(np.float32)


@dataclass
class OutputArrays:
    """Message-ready arrays of one frame; an entry is None when it was not requested.

    ``occupancy`` / ``points`` / ``flow``: structured PointCloud2 arrays (see postprocess.py);
    ``depth``: camera name -> ``(h, w)`` float32 32FC1 image; ``bev``: OccupancyGrid data;
    ``markers``: capped cube lists (publish after a DELETEALL); ``moving``: :data:`MOVING_DTYPE` voxels;
    ``arrows``: ``(K, 2, 3)`` start/end of capped velocity arrows (with ``markers``).
    """

    occupancy: np.ndarray | None = None
    points: np.ndarray | None = None
    flow: np.ndarray | None = None
    depth: dict[str, np.ndarray] | None = None
    bev: BevGrid | None = None
    markers: list[CubeList] | None = None
    moving: np.ndarray | None = None
    arrows: np.ndarray | None = None


OUTPUT_KINDS = ("occupancy", "points", "flow", "moving", "depth", "bev", "markers")


def moving_probability(out: PerceptionOutputs) -> np.ndarray:
    """The model's motion probability, or for a model without one whether the speed reaches
    :data:`~mv4d_core.models.heads.MOVING_SPEED_MPS` (0 or 1)."""
    if out.motion_prob is not None:
        return out.motion_prob
    return (np.linalg.norm(out.flow_mps, axis=-1) >= MOVING_SPEED_MPS).astype(np.float32)


def output_arrays(out: PerceptionOutputs, config: PerceptionConfig,
                  want: set[str] | frozenset | None = None) -> OutputArrays:
    """The arrays of the outputs in ``want`` (default: those enabled by ``config.publish``).

    Occupancy (and markers) use ``out.occupied``.
    """
    if want is None:
        want = {k for k in OUTPUT_KINDS if getattr(config.publish, k)}
    res = OutputArrays()
    thr = config.occupancy_threshold
    prob = np.where(out.occupied, out.occupancy_prob, 0.0).astype(np.float32)
    if "occupancy" in want or "markers" in want:
        vox = occupied_voxels(prob, out.grid, thr)
        if "occupancy" in want:
            res.occupancy = vox
        if "markers" in want:
            res.markers = marker_cubes(vox, out.grid, config.max_markers)
    if "points" in want:
        res.points = points_cloud(out.points_xyz, out.points_rgb)
    if "flow" in want:
        res.flow = flow_points(prob, out.flow_mps, out.grid, thr, config.flow.min_speed_mps)
    if "moving" in want or "markers" in want:
        fc = config.flow
        moving = moving_voxels(prob, out.flow_mps, moving_probability(out), out.grid, thr, fc.moving_min_speed_mps,
                               fc.moving_min_prob)
        if "moving" in want:
            res.moving = moving
        if "markers" in want:
            res.arrows = velocity_arrows(moving, fc.max_arrows, fc.arrow_horizon_s)
    if "depth" in want:
        res.depth = {name: depth_image(out.depth_m[i]) for i, name in enumerate(out.camera_names)}
    if "bev" in want:
        res.bev = bev_grid(out.occupancy_prob, out.grid, config.bev.z_min_m, config.bev.z_max_m)
    return res
