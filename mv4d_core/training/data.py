"""Training data: ``(t-1, t, t+1)`` frame triplets with precomputed LiDAR supervision.

Sources (see :class:`~mv4d_core.training.config.DataConfig`) become :class:`Sequence` s of
:class:`FrameRecord` through :mod:`mv4d_core.data.sources` (``mv4d synth`` folders, rosbag2 bags,
nuScenes dataroots, in-memory synthetic drives).

:class:`TripletDataset` decodes and resizes every frame once (tiny sizes: ~300 kB per 6-camera
frame), so CPU training is not dominated by decoding, and precomputes per sample everything that
does not depend on the network: projected LiDAR depth per camera
(:func:`mv4d_core.geometry.lidar_projection.project_lidar_to_cameras`), fused ±k-sweep occupancy labels with
ray-cast free space (:func:`mv4d_core.losses.occupancy_focal.fused_occupancy_labels`) and the LiDAR
point sets of the self-supervised scene-flow term.
``__getitem__`` only returns cached arrays, so it is deterministic per index (bit-exact resume).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence as Seq

import numpy as np
from torch.utils.data import Dataset

from mv4d_core.data.frame import FrameRecord
from mv4d_core.data.sources import Sequence
from mv4d_core.data.sources import load_sequences as load_source_sequences
from mv4d_core.geometry.transforms import invert_transform
from mv4d_core.losses.flow_chamfer import select_chamfer_points, select_ground_points
from mv4d_core.models.config import ModelConfig
from mv4d_core.models.inputs import resize_cameras
from mv4d_core.models.lidar_inputs import lidar_origin

log = logging.getLogger(__name__)


def load_sequences(data_cfg, image_size: tuple[int, int] | None = None) -> list[Sequence]:
    """The sequences of a :class:`~mv4d_core.training.config.DataConfig` (see
    :func:`mv4d_core.data.sources.load_sequences`)."""
    return load_source_sequences(data_cfg.sources, data_cfg.synth_seeds, data_cfg.synth_frames, data_cfg.topic_map,
                                 data_cfg.nuscenes_version, data_cfg.nuscenes_scenes, data_cfg.frames, image_size)


# ------------------------------------------------------------------------------------------ samples


@dataclass
class CachedFrame:
    """One frame at the model size. ``images`` (N, 3, H, W) uint8; ``K`` (N, 3, 3) for H x W;
    ``T_base_cam`` (N, 4, 4); ``T_world_base`` (4, 4); ``stamp_s``; ``lidar_xyz`` (P, 3) base_link or None;
    per camera LiDAR pixels ``lidar_uv`` (N, Pmax, 2), ``lidar_depth_m`` (N, Pmax) (0 = padding),
    ``lidar_count`` (N,); the sweep's ``lidar_intensity`` / ``lidar_ring`` (P,) or None, the sensor
    origin ``lidar_origin`` (3,) in base_link and ``stamp_ns`` (the LiDAR input of fusion models is
    built from these at every step, after masking)."""

    images: np.ndarray
    K: np.ndarray
    T_base_cam: np.ndarray
    T_world_base: np.ndarray
    stamp_s: float
    lidar_xyz: np.ndarray | None
    lidar_uv: np.ndarray
    lidar_depth_m: np.ndarray
    lidar_count: np.ndarray
    lidar_intensity: np.ndarray | None = None
    lidar_ring: np.ndarray | None = None
    lidar_origin: np.ndarray | None = None
    stamp_ns: int = 0


@dataclass
class TrainSample:
    """Triplet ``(t-1, t, t+1)`` of one sequence plus precomputed supervision.

    * ``frames``: the three :class:`CachedFrame` s (prev, current, next).
    * ``occupancy_labels`` (X, Y, Z) int8 {-1 unknown, 0 free, 1 occupied} or None (no LiDAR).
    * ``chamfer_src`` (P, 3) current-frame non-ground LiDAR points (base_link t), ``chamfer_dst``
      (Q, 3) next-frame points (base_link t+1), or None; ``T_next_cur`` (4, 4).
    * ``ground_points`` (G, 3) current-frame ground returns (base_link t, at or below the ground
      height) for the static-ground flow prior, or None.
    * ``index``, ``name``: provenance.
    * ``flow_teacher_points`` (M, 3) / ``flow_teacher_m`` (M, 3): frame-t points and the flow
      teacher's displacement to t+1 (base_link t), or None (:mod:`mv4d_core.training.flow_teacher`).
    """

    frames: tuple[CachedFrame, CachedFrame, CachedFrame]
    occupancy_labels: np.ndarray | None
    chamfer_src: np.ndarray | None
    chamfer_dst: np.ndarray | None
    T_next_cur: np.ndarray
    index: int
    name: str
    ground_points: np.ndarray | None = None
    flow_teacher_points: np.ndarray | None = None
    flow_teacher_m: np.ndarray | None = None


def cache_frame(frame: FrameRecord, cfg: ModelConfig, lidar_min_depth_m: float = 1.0,
                lidar_max_depth_m: float = 80.0) -> CachedFrame:
    """Resize ``frame`` to the model size once and project its LiDAR into every camera."""
    from mv4d_core.geometry.lidar_projection import project_lidar_to_cameras

    W, H = cfg.image_width, cfg.image_height
    rgb, K = resize_cameras(frame.images, frame.intrinsics, H, W)
    images = rgb.transpose(0, 3, 1, 2).copy()
    N = frame.num_cameras
    uv_list, d_list = [], []
    if frame.lidar_xyz is not None and len(frame.lidar_xyz):
        proj = project_lidar_to_cameras(frame.lidar_xyz.astype(np.float64), K, frame.T_base_cam, W, H,
                                        lidar_min_depth_m, lidar_max_depth_m)
        for c in range(N):
            m = np.asarray(proj.valid[c])
            uv_list.append(np.asarray(proj.uv[c])[m].astype(np.float32))
            d_list.append(np.asarray(proj.depth_m[c])[m].astype(np.float32))
    else:
        uv_list = [np.zeros((0, 2), np.float32)] * N
        d_list = [np.zeros(0, np.float32)] * N
    pmax = max(1, max(len(d) for d in d_list))
    uv = np.zeros((N, pmax, 2), np.float32)
    dep = np.zeros((N, pmax), np.float32)
    for c in range(N):
        uv[c, :len(d_list[c])] = uv_list[c]
        dep[c, :len(d_list[c])] = d_list[c]
    return CachedFrame(images=images, K=K.astype(np.float32), T_base_cam=frame.T_base_cam.astype(np.float32),
                       T_world_base=frame.T_world_base.astype(np.float64), stamp_s=frame.stamp_ns * 1e-9,
                       lidar_xyz=None if frame.lidar_xyz is None else frame.lidar_xyz.astype(np.float32),
                       lidar_uv=uv, lidar_depth_m=dep, lidar_count=np.array([len(d) for d in d_list], np.int64),
                       lidar_intensity=frame.lidar_intensity, lidar_ring=frame.lidar_ring,
                       lidar_origin=lidar_origin(frame.T_base_lidar), stamp_ns=int(frame.stamp_ns))


class TripletDataset(Dataset):
    """Every ``(t-1, t, t+1)`` triplet of every sequence, fully precomputed at construction.

    Args:
        sequences: from :func:`load_sequences`.
        cfg: the model config (image size, grid).
        occupancy_sweeps: ±k frames fused into the occupancy labels (0 = current sweep only).
        chamfer_points: points of frame t kept for the scene-flow Chamfer (t+1 keeps twice as many).
        chamfer_ground_z_m: points at or below this base_link height are ground (dropped).
        with_occupancy / with_chamfer / with_ground: skip those precomputations when their losses are off.
        occupancy_solid_behind_m: thickness prior of the occupancy labels (see
            :func:`~mv4d_core.losses.occupancy_focal.occupancy_labels_from_points`; 0 = off).
        with_flow_teacher: compute (or read from ``cache_dir``) the flow teacher's pseudo-labels.
        flow_pair_max_dt_s: frames ``t`` and ``t+1`` further apart get no Chamfer points and no teacher labels.
    """

    def __init__(self, sequences: Seq[Sequence], cfg: ModelConfig, occupancy_sweeps: int = 2,
                 chamfer_points: int = 2048, chamfer_ground_z_m: float = 0.3, lidar_min_depth_m: float = 1.0,
                 lidar_max_depth_m: float = 80.0, with_occupancy: bool = True, with_chamfer: bool = True,
                 progress: bool = True, with_ground: bool = False, occupancy_solid_behind_m: float = 0.0,
                 with_flow_teacher: bool = False, cache_dir: str | None = None, flow_pair_max_dt_s: float = 0.2):
        from mv4d_core.losses.occupancy_focal import fused_occupancy_labels

        self.cfg = cfg
        self.samples: list[TrainSample] = []
        todo = [(s, t) for s in sequences for t in range(1, len(s.frames) - 1)]
        if not todo:
            lens = {s.name: len(s.frames) for s in sequences}
            raise ValueError(f"no (t-1, t, t+1) triplet in the training sequences (frames per sequence: {lens}); "
                             "each sequence needs >= 3 frames")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="prepare samples", unit="sample")
        cache: dict[int, CachedFrame] = {}

        def cached(f: FrameRecord) -> CachedFrame:
            if id(f) not in cache:
                cache[id(f)] = cache_frame(f, cfg, lidar_min_depth_m, lidar_max_depth_m)
            return cache[id(f)]

        for idx, (seq, t) in enumerate(todo):
            fr = seq.frames
            trip = (cached(fr[t - 1]), cached(fr[t]), cached(fr[t + 1]))
            occ = src = dst = ground = None
            has_lidar = all(f.lidar_xyz is not None and len(f.lidar_xyz) for f in fr[t - 1:t + 2])
            if with_occupancy and has_lidar:
                lo, hi = max(0, t - occupancy_sweeps), min(len(fr), t + occupancy_sweeps + 1)
                occ = fused_occupancy_labels([f.lidar_xyz for f in fr[lo:hi]],
                                             np.stack([f.T_world_base for f in fr[lo:hi]]), t - lo, cfg.grid,
                                             origins_base=seq.lidar_origin_base, ground_z_m=cfg.ground_z_m,
                                             solid_behind_m=occupancy_solid_behind_m)
            T_next_cur = invert_transform(fr[t + 1].T_world_base) @ fr[t].T_world_base
            flow_pair = has_lidar and abs(fr[t + 1].stamp_ns - fr[t].stamp_ns) * 1e-9 <= flow_pair_max_dt_s
            if with_chamfer and flow_pair:
                rng = np.random.default_rng(idx)  # deterministic per sample
                src = select_chamfer_points(fr[t].lidar_xyz, cfg.grid, chamfer_ground_z_m, chamfer_points, rng)
                # denser targets than sources, so a moved source point finds its true neighbour
                dst = select_chamfer_points(fr[t + 1].lidar_xyz, cfg.grid, chamfer_ground_z_m, 2 * chamfer_points, rng)
            if with_ground and fr[t].lidar_xyz is not None and len(fr[t].lidar_xyz):
                # own stream, so switching the prior on or off leaves the Chamfer subsets unchanged
                g_rng = np.random.default_rng([idx, 1])
                ground = select_ground_points(fr[t].lidar_xyz, cfg.grid, chamfer_ground_z_m, chamfer_points, g_rng)
            t_pts = t_disp = None
            if with_flow_teacher and flow_pair:
                from mv4d_core.training.flow_teacher import teacher_labels

                t_pts, t_disp = teacher_labels(fr[t].lidar_xyz, fr[t + 1].lidar_xyz, fr[t].T_world_base,
                                               fr[t + 1].T_world_base, cfg.grid, cache_dir=cache_dir)
            self.samples.append(TrainSample(trip, occ, src, dst, T_next_cur.astype(np.float64), idx,
                                            f"{seq.name}[{t}]", ground, t_pts, t_disp))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> TrainSample:
        return self.samples[i]


def build_dataset(train_cfg, progress: bool = True) -> TripletDataset:
    """Load the sources of ``train_cfg.data`` and precompute their samples for ``train_cfg.model``."""
    m, d, x = train_cfg.model, train_cfg.data, train_cfg.extra_losses
    seqs = load_sequences(d, image_size=(m.image_width, m.image_height))
    for s in seqs:
        posed = [bool(np.all(np.isfinite(f.T_world_base))) for f in s.frames]
        if not all(posed):
            # The losses compare each frame with its neighbours through the ego motion: without a pose
            # there is nothing to compare.
            raise ValueError(f"{s.name}: {posed.count(False)} of {len(posed)} frames have no ego pose (no /tf "
                             "world->base or odometry at their stamps); training needs one: pass a topic map "
                             "naming the world frame or the odometry topic (data.topic_map)")
    return TripletDataset(seqs, m, d.occupancy_sweeps, x.chamfer_points, x.chamfer_ground_z_m,
                          d.lidar_min_depth_m, d.lidar_max_depth_m,
                          with_occupancy=train_cfg.losses.occupancy_focal > 0,
                          with_chamfer=x.flow_chamfer > 0, progress=progress,
                          with_ground=x.flow_ground_static > 0, occupancy_solid_behind_m=d.occupancy_solid_behind_m,
                          flow_pair_max_dt_s=d.flow_pair_max_dt_s,
                          with_flow_teacher=x.flow_distill > 0, cache_dir=d.cache_dir)


def collate_samples(batch: list[TrainSample]) -> list[TrainSample]:
    """Identity collate: the step function stacks what it needs (samples differ in LiDAR sizes)."""
    return list(batch)

