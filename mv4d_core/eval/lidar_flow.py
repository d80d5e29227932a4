"""Scene flow on LiDAR-only data (the Argoverse 2 sample has two sweeps and flow labels, no images).

Methods scored on a sweep pair, under the Argoverse 2 protocol (points within 50 m in x and y of the
ego, ground removed; dynamic = AV2's flag, >= 0.5 m/s; foreground = inside a labelled object;
Threeway EPE = mean of the foreground-dynamic, foreground-static and background EPEs):

* ``model``: a fusion network run through the perception pipeline on its LiDAR branch alone (no
  cameras), sweep 1 as the current sweep and sweep 0 as the previous one, so the motion between them
  is in its input; its published flow (occupied moving voxels, as ``mv4d eval`` scores it) at each
  sweep-0 point, moved into base_link 1, times the interval;
* ``baseline: zero``; ``baseline: nearest_neighbour`` (each point to its nearest ego-compensated
  point of sweep 1); ``baseline: cluster_icp`` (the flow teacher of training,
  :func:`mv4d_core.geometry.scene_flow.cluster_rigid_flow`);
* ``baseline: test_time_fit``: mv4d's label-free flow objective (truncated Chamfer after predicted +
  ego motion, the static-road prior, flow smoothness and sparsity, with the recipe's weights)
  optimised at test time on the pair, on the model's own flow representation (a ``(3, X, Y, Z)`` m/s
  volume, sampled trilinearly).

Every method works in mv4d's base_link (:mod:`mv4d_core.data.argoverse2`: on the road, not at the
rear axle). No method reads the labels; they only score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from mv4d_core.geometry.voxel_grid import VoxelGridSpec
from mv4d_core.losses.base import LossSet
from mv4d_core.losses.regularizers import FlowSmoothnessLoss, SparsityLoss
from mv4d_core.losses.flow_chamfer import (ChamferFlowLoss, GroundStaticFlowLoss, point_displacement,
                                           select_chamfer_points, select_ground_points)


@dataclass(frozen=True)
class FlowFitConfig:
    """Test-time fit of the flow objective. Weights are ``training/tiny_synth.yaml``'s flow terms
    (``flow_chamfer``, ``flow_ground_static``, ``flow_smoothness``, ``flow_sparsity``), not tuned on
    any labels."""

    iters: int = 200
    lr: float = 0.2                 # Adam step on m/s
    src_points: int = 4096
    dst_points: int = 8192
    truncate_m: float = 2.0
    ground_z_m: float = 0.3
    w_chamfer: float = 0.5
    w_ground_static: float = 0.2
    w_smoothness: float = 0.05
    w_sparsity: float = 0.05
    seed: int = 0


def fit_flow_volume(xyz0: np.ndarray, xyz1: np.ndarray, T_1_0: np.ndarray, dt_s: float, grid: VoxelGridSpec,
                    cfg: FlowFitConfig = FlowFitConfig(), progress: bool = False) -> tuple[torch.Tensor, list[float]]:
    """Fit a flow volume ``(3, X, Y, Z)`` m/s (base_link 0 axes) moving sweep 0 onto sweep 1.

    Args:
        xyz0, xyz1: ``(P, 3)`` / ``(Q, 3)`` points, each in its own base_link.
        T_1_0: ``(4, 4)`` base_link 0 -> base_link 1 (ego motion).
        dt_s: time between the sweeps.
    Returns:
        ``(volume, loss history)``.
    """
    if dt_s <= 0:
        raise ValueError(f"dt_s must be > 0, got {dt_s}")
    rng = np.random.default_rng(cfg.seed)
    src = torch.from_numpy(select_chamfer_points(xyz0, grid, cfg.ground_z_m, cfg.src_points, rng))
    dst = torch.from_numpy(select_chamfer_points(xyz1, grid, cfg.ground_z_m, cfg.dst_points, rng))
    road = torch.from_numpy(select_ground_points(xyz0, grid, cfg.ground_z_m, cfg.src_points, rng))
    if len(src) == 0 or len(dst) == 0:
        raise ValueError("no non-ground LiDAR points inside the grid in one of the sweeps: nothing to fit")
    # The trainer's loss modules and batch keys, so the fitted objective is the training one.
    objective = LossSet({"flow_chamfer": ChamferFlowLoss(cfg.w_chamfer, grid=grid, truncate_m=cfg.truncate_m),
                         "flow_ground_static": GroundStaticFlowLoss(cfg.w_ground_static, grid=grid),
                         "flow_smoothness": FlowSmoothnessLoss(cfg.w_smoothness),
                         "flow_sparsity": SparsityLoss(cfg.w_sparsity)})
    torch.manual_seed(cfg.seed)
    vol = torch.zeros(1, 3, *grid.shape, requires_grad=True)
    batch = {"flow_mps": vol, "chamfer_src": [src], "chamfer_dst": [dst], "ground_points": [road],
             "T_next_cur": torch.as_tensor(np.asarray(T_1_0, np.float64), dtype=torch.float32)[None],
             "next_dt_s": torch.tensor([float(dt_s)])}
    opt = torch.optim.Adam([vol], lr=cfg.lr)
    history = []
    steps = range(cfg.iters)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="fit flow", unit="it")
    for _ in steps:
        opt.zero_grad()
        loss = objective(batch)["total"]
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return vol.detach()[0], history


def volume_displacement(volume: torch.Tensor, xyz: np.ndarray, grid: VoxelGridSpec, dt_s: float) -> np.ndarray:
    """Displacement ``(P, 3)`` metres of each point over ``dt_s`` from a fitted ``(3, X, Y, Z)`` m/s volume,
    read trilinearly as the fit's own loss reads it (:func:`~mv4d_core.losses.flow_chamfer.point_displacement`)."""
    pts = torch.from_numpy(np.asarray(xyz, np.float32).reshape(-1, 3))
    return point_displacement(volume.float(), pts, grid, float(dt_s)).numpy()


AV2_RANGE_M = 50.0


def threeway(pred_m: np.ndarray, gt_m: np.ndarray, dynamic: np.ndarray, foreground: np.ndarray,
             valid: np.ndarray) -> dict:
    """Threeway EPE (m) and its parts over the ``valid`` points: ``fd`` foreground dynamic, ``fs``
    foreground static, ``bs`` background; ``threeway_epe`` their mean (NaN parts left out)."""
    epe = np.linalg.norm(np.asarray(pred_m, np.float64) - np.asarray(gt_m, np.float64), axis=1)
    parts = {"fd": valid & foreground & dynamic, "fs": valid & foreground & ~dynamic, "bs": valid & ~foreground}
    out = {k: float(epe[m].mean()) if m.any() else float("nan") for k, m in parts.items()}
    out.update({f"num_{k}": int(m.sum()) for k, m in parts.items()})
    vals = [out[k] for k in ("fd", "fs", "bs") if np.isfinite(out[k])]
    out["threeway_epe"] = float(np.mean(vals)) if vals else float("nan")
    return out


def network_flow(engine, frame0, frame1) -> np.ndarray:
    """``(P, 3)`` displacement (base_link 0) of each point of ``frame0`` from a fusion engine run on its
    LiDAR branch alone through the perception pipeline (camera-less frames: sweep 0, then sweep 1 as
    the current one with sweep 0 as its previous), read from its published flow as
    :mod:`mv4d_core.eval.scoring` reads it."""
    from mv4d_core.eval.scoring import flow_at_points, published_prediction
    from mv4d_core.geometry.transforms import invert_transform, transform_points
    from mv4d_core.pipeline import PerceptionConfig, PerceptionPipeline

    spec = engine.spec
    if spec.lidar is None:
        raise ValueError(f"engine {spec.name!r} has no LiDAR input: the network cannot run without cameras")
    cfg = PerceptionConfig()
    pipe = PerceptionPipeline(engine, cfg)
    pipe.process(frame0)
    pred = published_prediction(pipe.process(frame1), cfg)
    T_1_0 = invert_transform(np.asarray(frame1.T_world_base, np.float64)) @ np.asarray(frame0.T_world_base, np.float64)
    p_in1 = transform_points(T_1_0, np.asarray(frame0.lidar_xyz, np.float64))
    v1 = flow_at_points(pred.flow_mps, pred.grid, p_in1)                   # m/s along base_link 1 axes
    dt = (frame1.stamp_ns - frame0.stamp_ns) * 1e-9
    return (v1.astype(np.float64) @ T_1_0[:3, :3] * dt).astype(np.float32)   # R^T v: base_link 0 axes


def evaluate_av2_log(log_dir, grid: VoxelGridSpec, cfg: FlowFitConfig = FlowFitConfig(),
                     progress: bool = False, engine=None) -> dict:
    """Score every method of the module docstring on the first sweep pair of one AV2 log (``model``
    only with ``engine``). Returns ``{"results": {method: {"threeway_epe", "fd", "fs", "bs", ...,
    "flow": FlowMetrics.compute()}}, "fit": {...}}``."""
    from mv4d_core.data.argoverse2 import Av2Log
    from mv4d_core.eval.metrics import FlowMetrics

    log = Av2Log(log_dir)
    if len(log.lidar_stamps) < 2:
        raise ValueError(f"{log_dir}: scene flow needs two sweeps")
    t0, t1 = log.lidar_stamps[:2]
    f0 = log.frame(t0)
    if f0.gt is None or f0.gt.point_flow_m is None:
        raise ValueError(f"{log_dir}: no flow_labels.feather to score against")
    from mv4d_core.geometry.scene_flow import cluster_rigid_flow, nearest_neighbour_flow
    from mv4d_core.geometry.transforms import invert_transform, transform_points

    labels = log.flow_labels()
    f1 = log.frame(t1, with_flow=False)
    xyz0, xyz1 = f0.lidar_xyz, f1.lidar_xyz          # base_link of each sweep's time
    dt = (t1 - t0) * 1e-9
    T_1_0 = invert_transform(f1.T_world_base) @ f0.T_world_base
    vol, history = fit_flow_volume(xyz0, xyz1, T_1_0, dt, grid, cfg, progress)
    gt = f0.gt.point_flow_m
    xyz1_in0 = transform_points(invert_transform(T_1_0), xyz1.astype(np.float64))
    methods = {}
    if engine is not None:
        methods["model"] = network_flow(engine, f0, f1)
    methods.update({"baseline: zero": np.zeros_like(gt),
                    "baseline: nearest_neighbour": nearest_neighbour_flow(xyz0, xyz1_in0),
                    "baseline: cluster_icp": cluster_rigid_flow(xyz0, xyz1_in0),
                    "baseline: test_time_fit": volume_displacement(vol, xyz0, grid, dt)})
    protocol = (np.abs(xyz0[:, 0]) <= AV2_RANGE_M) & (np.abs(xyz0[:, 1]) <= AV2_RANGE_M) & ~labels.is_ground
    foreground = labels.classes > 0
    inside = grid.points_to_voxels(xyz0)[1]
    results = {}
    for name, pred in methods.items():
        m = FlowMetrics()
        m.update(pred, gt, dynamic=labels.dynamic, valid=protocol)
        results[name] = {**threeway(pred, gt, labels.dynamic, foreground, protocol), "flow": m.compute()}
    return {"results": results,
            "fit": {"config": asdict(cfg), "loss_first": history[0], "loss_last": history[-1],
                    "points_in_grid": int(inside.sum()), "points_scored": int(protocol.sum()),
                    "points_total": int(len(xyz0)), "dt_s": dt, "log": log.log_id,
                    "grid_covers_m": [float(grid.range_min[0]), float(grid.range_max[0])]}}
