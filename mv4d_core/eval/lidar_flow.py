"""Scene flow on LiDAR-only data (the Argoverse 2 sample has sweeps and flow labels, no images).

The camera network cannot run without images, so what can be scored on such data is mv4d's
*flow objective*: the label-free terms the training recipe uses for the flow head (truncated
Chamfer after predicted + ego motion, the static-road prior, flow smoothness and sparsity), with
the recipe's weights, fitted at test time to one sweep pair on the model's own flow
representation (a ``(3, X, Y, Z)`` m/s volume on the voxel grid, sampled trilinearly). No labels
are read by the fit; the labels only score it, next to the zero-flow baseline.

This says whether the self-supervised flow signal is right on real LiDAR (moving points get
moved, static ones stay); it is not a score of a trained network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from mv4d_core.geometry.voxel_grid import VoxelGridSpec
from mv4d_core.losses.base import LossSet
from mv4d_core.losses.regularizers import FlowSmoothnessLoss, SparsityLoss
from mv4d_core.render.field import sample_volume
from mv4d_core.losses.flow_chamfer import (ChamferFlowLoss, GroundStaticFlowLoss, select_chamfer_points,
                                           select_ground_points)


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


def flow_at_points(volume: torch.Tensor, xyz: np.ndarray, grid: VoxelGridSpec, dt_s: float) -> np.ndarray:
    """Displacement ``(P, 3)`` metres of each point over ``dt_s`` from a ``(3, X, Y, Z)`` m/s volume."""
    pts = torch.from_numpy(np.asarray(xyz, np.float32).reshape(-1, 3))
    return (sample_volume(volume[None].float(), pts[None], grid)[0] * float(dt_s)).numpy()


def evaluate_av2_log(log_dir, grid: VoxelGridSpec, cfg: FlowFitConfig = FlowFitConfig(),
                     progress: bool = False) -> dict:
    """Fit + score the first sweep pair of one AV2 log. Returns ``{"results": {method: {"flow":
    FlowMetrics.compute()}}, "fit": {...}}``; AV2's own ``dynamic`` flag splits the points."""
    from mv4d_core.data.argoverse2 import Av2Log
    from mv4d_core.eval.metrics import FlowMetrics

    log = Av2Log(log_dir)
    if len(log.lidar_stamps) < 2:
        raise ValueError(f"{log_dir}: scene flow needs two sweeps")
    t0, t1 = log.lidar_stamps[:2]
    f0 = log.frame(t0)
    if f0.gt is None or f0.gt.point_flow_m is None:
        raise ValueError(f"{log_dir}: no flow_labels.feather to score against")
    labels = log.flow_labels()
    xyz0, xyz1 = f0.lidar_xyz, log.sweep(t1).xyz
    dt = (t1 - t0) * 1e-9
    vol, history = fit_flow_volume(xyz0, xyz1, labels.T_ego1_ego0, dt, grid, cfg, progress)
    inside = grid.points_to_voxels(xyz0)[1]
    gt = f0.gt.point_flow_m
    methods = {"label-free flow objective (test-time fit)": flow_at_points(vol, xyz0, grid, dt),
               "baseline: zero": np.zeros_like(gt)}
    results = {}
    for name, pred in methods.items():
        m = FlowMetrics()
        m.update(pred, gt, dynamic=labels.dynamic, valid=inside)
        results[name] = {"flow": m.compute()}
    return {"results": results,
            "fit": {"config": asdict(cfg), "loss_first": history[0], "loss_last": history[-1],
                    "points_in_grid": int(inside.sum()), "points_total": int(len(xyz0)), "dt_s": dt,
                    "log": log.log_id}}
