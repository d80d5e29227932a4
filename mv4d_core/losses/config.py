"""``LossConfig``: one typed source of truth for which losses run, their weights and parameters.

A weight of 0 leaves a loss out of the :class:`LossSet` (so its inputs need not exist).
Defaults are camera-only (photometric reprojection, rendered RGB, Eikonal/Hessian, smoothness and
flow priors, after SelfOcc); LiDAR terms, depth-head consistency and masked reconstruction are off
until a recipe switches them on. The LiDAR scene-flow terms (Chamfer, road prior, forward-backward
cycle, teacher distillation) are recipe terms of :class:`mv4d_core.training.config.ExtraLossConfig`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from mv4d_core.geometry.voxel_grid import TINY, VoxelGridSpec
from mv4d_core.losses.base import LossSet, WeightedLoss
from mv4d_core.losses.lidar_depth import LidarDepthLoss
from mv4d_core.losses.masked_modelling import RenderedReconstructionLoss, VolumeReconstructionLoss
from mv4d_core.losses.occupancy_focal import OccupancyFocalLoss
from mv4d_core.losses.photometric import PhotometricLoss
from mv4d_core.losses.render_consistency import DepthConsistencyLoss, RenderedRGBLoss
from mv4d_core.losses.regularizers import (EdgeAwareSmoothnessLoss, EikonalLoss, FlowSmoothnessLoss,
                                           HessianLoss, SparsityLoss)

#: LossSet names in build order.
LOSS_NAMES = ("photometric", "rgb", "depth_consistency", "lidar_depth", "occupancy_focal", "eikonal", "hessian",
              "edge_smoothness",
              "flow_smoothness", "flow_sparsity", "volume_reconstruction",
              "rendered_reconstruction")


#: The batch dictionary the trainer assembles for a :class:`LossSet`: key -> shape, frame, units.
#: ``V`` = batch x cameras (views), ``h x w`` ray lattice, ``S`` samples per ray, ``A`` adjacent
#: frames, ``M`` LiDAR rays per view, ``(X, Y, Z)`` the voxel grid. Every default ``reads`` of every
#: loss is listed here (a test checks it).
BATCH_KEYS: dict[str, str] = {
    "ray_points_base": "(V, h, w, S, 3) float, render sample positions, current base_link, m",
    "ray_weights": "(V, h, w, S) float, render weights w_i",
    "ray_rgb": "(V, h, w, 3) float 0..1, current image colour at each ray pixel",
    "ray_uv": "(V, h, w, 2) float, ray pixels in adjacent-image pixel units (identity auto-mask)",
    "ray_valid": "(V, h, w) bool, rays that count (optional)",
    "adj_images": "(A, V, 3, H, W) float 0..1, previous/next images of the same cameras",
    "adj_intrinsics": "(V, 3, 3), K of the adjacent images",
    "T_base_cam": "(V, 4, 4), optical camera -> base_link",
    "T_adj_cur": "(A, V, 4, 4) or (A, 4, 4), current base_link -> adjacent base_link",
    "ray_flow_mps": "(V, h, w, S, 3) float, predicted object velocity at the samples, current base_link, m/s",
    "adj_dt_s": "(A,) float, t_adjacent - t_current, s",
    "ray_rgb_rendered": "(V, h, w, 3) float 0..1, rendered colour",
    "ray_depth_m": "(V, h, w) float, rendered optical depth, m",
    "ray_depth_head_m": "(V, h, w) float, depth-head depth sampled at the ray pixels, m",
    "lidar_ray_depth_m": "(V, M) float, rendered depth of rays cast at LiDAR pixels, m",
    "lidar_depth_m": "(V, M) float, LiDAR optical depth at those pixels (0/inf = none), m",
    "lidar_depth_valid": "(V, M) bool, optional",
    "lidar_head_depth_m": "(V, Mh) float, depth head read at LiDAR pixels of the full sweep, m",
    "lidar_head_target_m": "(V, Mh) float, LiDAR optical depth at those pixels, m",
    "lidar_head_valid": "(V, Mh) bool, optional",
    "depth_residual": "(B, N, H, W) float, log-depth change of the LiDAR-guided depth head against its base",
    "flow_teacher_points": "B x (M, 3) float, frame-t LiDAR points with a flow-teacher label, base_link t, m",
    "flow_teacher_m": "B x (M, 3) float, the teacher's displacement of those points to t+1, m",
    "occupancy_logits": "(B, X, Y, Z) float, occupancy logits (or SDF with focal_from_sdf)",
    "occupancy_labels": "(B, X, Y, Z) int8 in {-1 unknown, 0 free, 1 occupied}",
    "sdf": "(B, X, Y, Z) float, SDF grid, m",
    "sdf_mask": "(B, X, Y, Z) bool, optional region for Eikonal/Hessian",
    "flow_mps": "(B, 3, X, Y, Z) float, voxel flow, base_link, m/s",
    "flow_mask": "(B, X, Y, Z) bool, optional",
    "next_flow_mps": "(B, 3, X, Y, Z) float, frame t+1's voxel flow (no gradient), base_link t+1, m/s",
    "key_volume_reconstructed": "(B, C, X, Y, Z), key-frame volume rebuilt from warped neighbours",
    "key_volume": "(B, C, X, Y, Z), directly encoded key-frame volume (target, detached)",
    "key_volume_valid": "(B, 1, X, Y, Z), optional, from warp_neighbours_to_key",
    "recon_ray_rgb": "(V, R, 3), colour rendered from the reconstructed volume",
    "recon_ray_depth_m": "(V, R), depth rendered from the reconstructed volume, m",
    "ray_rgb_target": "(V, R, 3), image colours (or direct-volume renders)",
    "ray_depth_target_m": "(V, R), LiDAR depth (or direct-volume render depth), m",
    "ray_depth_valid": "(V, R) bool, optional",
}


@dataclass
class LossConfig:
    """Weights (0 = off), ``enable_after`` steps and parameters of every mv4d loss."""

    photometric: float = 1.0
    rgb: float = 0.1
    depth_consistency: float = 0.0
    lidar_depth: float = 0.0
    occupancy_focal: float = 0.0
    eikonal: float = 0.1
    hessian: float = 0.01
    edge_smoothness: float = 0.01
    flow_smoothness: float = 0.05
    flow_sparsity: float = 0.01
    volume_reconstruction: float = 0.0
    rendered_reconstruction: float = 0.0
    #: ``{loss name: first training step}``; missing names start at step 0.
    enable_after: dict[str, int] = field(default_factory=dict)
    #: ``{loss name: {forward argument: batch key}}`` overrides of each loss' default reads.
    reads: dict[str, dict[str, str]] = field(default_factory=dict)
    photometric_use_flow: bool = False
    photometric_ssim_weight: float = 0.85
    photometric_automask: bool = True
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    focal_from_sdf: bool = False
    recon_rgb_weight: float = 1.0
    recon_depth_weight: float = 1.0

    @classmethod
    def camera_only(cls) -> "LossConfig":
        return cls()

    @classmethod
    def with_lidar(cls) -> "LossConfig":
        """Camera losses + UniPAD LiDAR depth + UniScene focal occupancy, both at weight 1."""
        return cls(lidar_depth=1.0, occupancy_focal=1.0)

    @classmethod
    def from_dict(cls, d: dict) -> "LossConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown loss config key(s) {sorted(unknown)}; known: {sorted(known)}")
        cfg = cls(**d)
        bad = (set(cfg.enable_after) | set(cfg.reads)) - set(LOSS_NAMES)
        if bad:
            raise ValueError(f"enable_after/reads name unknown loss(es) {sorted(bad)}; losses: {LOSS_NAMES}")
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)


def build_loss_set(cfg: LossConfig, grid: VoxelGridSpec = TINY) -> LossSet:
    """The :class:`LossSet` of every loss with a positive weight in ``cfg`` (grid for SDF/flow terms)."""
    def kw(name: str) -> dict:
        return {"weight": getattr(cfg, name), "enable_after": cfg.enable_after.get(name, 0),
                "reads": cfg.reads.get(name)}

    makers = {
        "photometric": lambda: PhotometricLoss(**kw("photometric"), ssim_weight=cfg.photometric_ssim_weight,
                                               automask=cfg.photometric_automask, use_flow=cfg.photometric_use_flow),
        "rgb": lambda: RenderedRGBLoss(**kw("rgb"), ssim_weight=cfg.photometric_ssim_weight),
        "depth_consistency": lambda: DepthConsistencyLoss(**kw("depth_consistency")),
        "lidar_depth": lambda: LidarDepthLoss(**kw("lidar_depth")),
        "occupancy_focal": lambda: OccupancyFocalLoss(**kw("occupancy_focal"), gamma=cfg.focal_gamma,
                                                      alpha=cfg.focal_alpha, from_sdf=cfg.focal_from_sdf),
        "eikonal": lambda: EikonalLoss(**kw("eikonal"), voxel_size_m=grid.voxel_size),
        "hessian": lambda: HessianLoss(**kw("hessian"), voxel_size_m=grid.voxel_size),
        "edge_smoothness": lambda: EdgeAwareSmoothnessLoss(**kw("edge_smoothness")),
        "flow_smoothness": lambda: FlowSmoothnessLoss(**kw("flow_smoothness")),
        "flow_sparsity": lambda: SparsityLoss(**kw("flow_sparsity")),
        "volume_reconstruction": lambda: VolumeReconstructionLoss(**kw("volume_reconstruction")),
        "rendered_reconstruction": lambda: RenderedReconstructionLoss(
            **kw("rendered_reconstruction"), rgb_weight=cfg.recon_rgb_weight, depth_weight=cfg.recon_depth_weight),
    }
    losses: dict[str, WeightedLoss] = {}
    for name in LOSS_NAMES:
        if getattr(cfg, name) < 0:
            raise ValueError(f"loss weight {name} must be >= 0, got {getattr(cfg, name)}")
        if getattr(cfg, name) > 0:
            losses[name] = makers[name]()
    return LossSet(losses)
