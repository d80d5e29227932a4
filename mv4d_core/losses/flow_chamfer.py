"""Label-free LiDAR scene-flow loss: truncated Chamfer distance after predicted + ego motion.

Self-supervised scene-flow methods (e.g. the Chamfer/nearest-neighbour objectives of
PointPWC-Net-style self-supervision) fit the flow so that the points of frame ``t``, moved by
the predicted flow, land on the points of frame ``t+1``. mv4d's flow head predicts the velocity of
the voxel content relative to the world, in the current base_link (m/s), so a LiDAR point ``p``
of frame ``t`` is expected in frame ``t+1``'s base_link at ``T_next_cur (p + v(p) dt)``. With exact
ego poses the static world already aligns (zero flow is right for it) and only movers pull the
flow away from zero — this is the signal that lets predicted flow beat the zero-flow baseline.

Both directions of the Chamfer distance are truncated at ``truncate_m`` (points with no
counterpart, e.g. newly visible surfaces, stop contributing gradient).

Ground returns carry no Chamfer signal (a flat road matches itself under any in-plane shift), so
:class:`GroundStaticFlowLoss` adds the matching label-free prior: the road does not move.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mv4d_core.geometry.transforms import transform_points
from mv4d_core.geometry.voxel_grid import VoxelGridSpec
from mv4d_core.losses.base import WeightedLoss
from mv4d_core.render.field import sample_volume, voxel_values


def truncated_chamfer(src: torch.Tensor, dst: torch.Tensor, truncate_m: float = 2.0) -> torch.Tensor:
    """``src`` (P, 3), ``dst`` (Q, 3) metres -> mean nearest distance src->dst plus dst->src, each
    distance clamped at ``truncate_m`` (so outliers give no gradient). 0 when either set is empty."""
    if src.numel() == 0 or dst.numel() == 0:
        return src.sum() * 0
    d = torch.cdist(src[None], dst[None])[0]          # (P, Q)
    fwd = d.min(1).values.clamp(max=truncate_m)
    bwd = d.min(0).values.clamp(max=truncate_m)
    return fwd.mean() + bwd.mean()


#: How a flow loss reads the flow volume at a point: ``trilinear`` (interpolated between voxel
#: centres) or ``voxel`` (the value of the voxel holding the point: what the published per-voxel flow
#: says about it, so the trained quantity is the published one).
FLOW_READS: tuple[str, ...] = ("trilinear", "voxel")


def point_displacement(flow_mps: torch.Tensor, points: torch.Tensor, grid: VoxelGridSpec, dt_s: float,
                       read: str = "trilinear") -> torch.Tensor:
    """The flow volume ``(3, X, Y, Z)`` m/s read at ``points`` ``(P, 3)`` (``read``, see
    :data:`FLOW_READS`) times ``dt_s``: each point's displacement ``(P, 3)`` in metres (the read every
    flow loss makes)."""
    pts = points[None].to(flow_mps.dtype)
    if read == "trilinear":
        return sample_volume(flow_mps[None], pts, grid)[0] * dt_s
    if read == "voxel":
        return voxel_values(flow_mps[None], pts, grid)[0] * dt_s
    raise ValueError(f"unknown flow read {read!r} ({' | '.join(FLOW_READS)})")


def moved_points(flow_mps: torch.Tensor, points: torch.Tensor, grid: VoxelGridSpec, dt_s: float,
                 T_next_cur: torch.Tensor, read: str = "trilinear") -> torch.Tensor:
    """Points ``(P, 3)`` of frame t (base_link t) moved by the flow volume ``(3, X, Y, Z)`` over
    ``dt_s`` and expressed in base_link t+1 (``T_next_cur`` (4, 4)) -> ``(P, 3)``."""
    moved = points.to(flow_mps.dtype) + point_displacement(flow_mps, points, grid, dt_s, read)
    return transform_points(T_next_cur.to(flow_mps.dtype), moved)


def batch_mean(flow_mps: torch.Tensor, points: Sequence[torch.Tensor], term) -> torch.Tensor:
    """Mean over the batch of ``term(b)`` (a scalar per sample); a sample without points adds a zero
    that keeps the flow volume in the graph."""
    return torch.stack([term(b) if points[b].numel() else flow_mps[b].sum() * 0
                        for b in range(flow_mps.shape[0])]).mean()


def cycle_error(flow_mps: torch.Tensor, next_flow_mps: torch.Tensor, points: torch.Tensor, grid: VoxelGridSpec,
                dt_s: float, T_next_cur: torch.Tensor, read: str = "trilinear") -> torch.Tensor:
    """Forward-backward cycle error ``(P,)`` (m, L1 over x, y, z) of frame-t points ``(P, 3)``.

    Forward: ``p -> p' = p + v_t(p) dt`` (``flow_mps`` of frame t, base_link t). Backward: frame t+1's
    flow ``next_flow_mps`` is the velocity of its content, so the content at ``p'`` came from
    ``p' - v_{t+1}(p') dt``; read in base_link t+1 at ``T_next_cur p'`` and rotated back into base_link
    t axes. The cycle closes (error 0) when ``v_t(p) = v_{t+1}(p')`` in world-aligned axes: what a
    rigid mover at constant velocity does, and what a flow that only sometimes sees the motion
    does not."""
    fwd = point_displacement(flow_mps, points, grid, dt_s, read)
    T = T_next_cur.to(flow_mps.dtype)
    q = transform_points(T, points.to(flow_mps.dtype) + fwd)
    bwd_next = -point_displacement(next_flow_mps, q, grid, dt_s, read)             # base_link t+1 axes
    bwd = bwd_next @ T[:3, :3]                                                       # R^T v: base_link t axes
    return (fwd + bwd).abs().sum(1)


class ChamferFlowLoss(WeightedLoss):
    """``forward(flow_mps (B, 3, X, Y, Z), src_points [B x (P_b, 3)], dst_points [B x (Q_b, 3)],
    T_next_cur (B, 4, 4), dt_s (B,))`` -> mean over the batch of :func:`truncated_chamfer` between the
    moved frame-t points and the frame-t+1 points."""

    default_reads = {"flow_mps": "flow_mps", "src_points": "chamfer_src", "dst_points": "chamfer_dst",
                     "T_next_cur": "T_next_cur", "dt_s": "next_dt_s"}

    def __init__(self, weight: float = 1.0, enable_after: int = 0, reads=None, *, grid: VoxelGridSpec,
                 truncate_m: float = 2.0, read: str = "trilinear"):
        super().__init__(weight, enable_after, reads)
        self.grid = grid
        self.truncate_m = truncate_m
        self.read = read

    def forward(self, flow_mps: torch.Tensor, src_points: Sequence[torch.Tensor], dst_points: Sequence[torch.Tensor],
                T_next_cur: torch.Tensor, dt_s: torch.Tensor) -> torch.Tensor:
        B = flow_mps.shape[0]
        if len(src_points) != B or len(dst_points) != B:
            raise ValueError(f"ChamferFlowLoss: {len(src_points)}/{len(dst_points)} point sets for a batch of {B}")
        terms = []
        for b in range(B):
            moved = moved_points(flow_mps[b], src_points[b], self.grid, float(dt_s[b]), T_next_cur[b], self.read)
            terms.append(truncated_chamfer(moved, dst_points[b].to(moved.dtype), self.truncate_m))
        return torch.stack(terms).mean()


class GroundStaticFlowLoss(WeightedLoss):
    """``forward(flow_mps (B, 3, X, Y, Z), ground_points [B x (G_b, 3)], dt_s (B,))`` -> mean over the
    batch of the mean squared displacement ``|v(p) dt|^2`` (m^2) predicted at ground LiDAR returns ``p``.

    Squared, not L1: the flow head is one 1x1x1 conv shared by every voxel, and an L1 pull of
    constant strength on the (common) road points outweighed the Chamfer signal of the (rare)
    movers and collapsed the whole flow head to exactly zero (measured: 1600-step synthetic run,
    moving-point EPE = the zero-flow baseline's). The square removes the systematic road drift it
    targets (about -0.9 m/s along x without it) and fades near zero, so movers can still win."""

    default_reads = {"flow_mps": "flow_mps", "ground_points": "ground_points", "dt_s": "next_dt_s"}

    def __init__(self, weight: float = 1.0, enable_after: int = 0, reads=None, *, grid: VoxelGridSpec,
                 read: str = "trilinear"):
        super().__init__(weight, enable_after, reads)
        self.grid = grid
        self.read = read

    def forward(self, flow_mps: torch.Tensor, ground_points: Sequence[torch.Tensor], dt_s: torch.Tensor) -> torch.Tensor:
        B = flow_mps.shape[0]
        if len(ground_points) != B:
            raise ValueError(f"GroundStaticFlowLoss: {len(ground_points)} point sets for a batch of {B}")
        def term(b):
            d = point_displacement(flow_mps[b], ground_points[b], self.grid, float(dt_s[b]), self.read)   # (G, 3) m
            return d.square().sum(1).mean()

        return batch_mean(flow_mps, ground_points, term)


class FlowCycleLoss(WeightedLoss):
    """``forward(flow_mps, next_flow_mps (B, 3, X, Y, Z), points [B x (P_b, 3)], T_next_cur (B, 4, 4),
    dt_s (B,))`` -> mean over the batch of the mean :func:`cycle_error` (m) of frame t's points.

    ``next_flow_mps`` is frame t+1's prediction, a target (the training step computes it without
    gradient): the term asks frame t's flow to agree with what the network says one frame later
    along the trajectory it predicts."""

    default_reads = {"flow_mps": "flow_mps", "next_flow_mps": "next_flow_mps", "points": "chamfer_src",
                     "T_next_cur": "T_next_cur", "dt_s": "next_dt_s"}

    def __init__(self, weight: float = 1.0, enable_after: int = 0, reads=None, *, grid: VoxelGridSpec,
                 read: str = "trilinear"):
        super().__init__(weight, enable_after, reads)
        self.grid = grid
        self.read = read

    def forward(self, flow_mps: torch.Tensor, next_flow_mps: torch.Tensor, points: Sequence[torch.Tensor],
                T_next_cur: torch.Tensor, dt_s: torch.Tensor) -> torch.Tensor:
        B = flow_mps.shape[0]
        if len(points) != B or next_flow_mps.shape != flow_mps.shape:
            raise ValueError(f"FlowCycleLoss: {len(points)} point sets and a next flow of {tuple(next_flow_mps.shape)} "
                             f"for flow {tuple(flow_mps.shape)}")
        return batch_mean(flow_mps, points, lambda b: cycle_error(
            flow_mps[b], next_flow_mps[b].detach(), points[b], self.grid, float(dt_s[b]), T_next_cur[b], self.read).mean())


# ------------------------------------------------------------------------- LiDAR point selection


def select_chamfer_points(xyz: np.ndarray, grid: VoxelGridSpec, ground_z_m: float, max_points: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Non-ground points inside the grid, randomly subsampled to ``max_points`` (``(P, 3)`` float32).

    Ground returns are dropped (standard in self-supervised scene flow): the scan rings slide over
    the road as the ego moves, so their nearest neighbours carry no motion information."""
    return _select_points(xyz, grid, ground_z_m, max_points, rng, ground=False)


def select_ground_points(xyz: np.ndarray, grid: VoxelGridSpec, ground_z_m: float, max_points: int,
                         rng: np.random.Generator) -> np.ndarray:
    """The complement of :func:`select_chamfer_points`: finite returns inside the grid at or below
    ``ground_z_m`` (road surface), subsampled to ``max_points`` (``(G, 3)`` float32)."""
    return _select_points(xyz, grid, ground_z_m, max_points, rng, ground=True)


def _select_points(xyz, grid, ground_z_m, max_points, rng, ground: bool) -> np.ndarray:
    p = np.asarray(xyz, np.float64).reshape(-1, 3)
    lo, hi = np.asarray(grid.range_min), np.asarray(grid.range_max)
    below = p[:, 2] <= ground_z_m
    keep = np.all((p >= lo) & (p < hi), axis=1) & (below if ground else ~below)
    p = p[keep]
    if len(p) > max_points:
        p = p[np.sort(rng.choice(len(p), max_points, replace=False))]
    return p.astype(np.float32)
