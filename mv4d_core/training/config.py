"""``TrainConfig``: the one typed, YAML-loadable description of a self-supervised training run.

It bundles the network (:class:`~mv4d_core.models.ModelConfig`), the losses
(:class:`~mv4d_core.losses.LossConfig` plus the recipe-only terms of :class:`ExtraLossConfig`),
the optimisation (:class:`~mv4d_core.training.TrainerConfig`), the data sources
(:class:`DataConfig`) and the ray sampling (:class:`RayConfig`). ``TrainConfig.to_dict()`` is
stored in every checkpoint (``config``) next to ``model_config``, so a checkpoint alone rebuilds
the model and documents how it was trained.

YAML layout (every section optional; unknown keys are errors naming the section)::

    model: {size: tiny, temporal: true}        # ModelConfig.from_dict (``size`` picks a preset)
    losses: {photometric: 1.0, lidar_depth: 1.0, ...}   # LossConfig.from_dict
    extra_losses: {flow_chamfer: 0.5, lidar_depth_head: 1.0}
    trainer: {max_steps: 800, lr: 5e-4, ...}   # TrainerConfig fields
    data: {synth_seeds: [0, 1, 2, 3], synth_frames: 12, sources: [], ...}
    rays: {rows: 16, cols: 32, num_samples: 48, ...}
    lidar_masking: {point_drop: 0.5, beam_drop: 0.3, ...}   # fusion models only
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mv4d_core.losses.config import LossConfig
from mv4d_core.models.config import ModelConfig
from mv4d_core.training.lidar_masking import LidarMaskingConfig
from mv4d_core.training.trainer import TrainerConfig


def _strict(cls, d: dict | None, section: str):
    """Build dataclass ``cls`` from ``d``; unknown keys raise naming ``section``."""
    d = dict(d or {})
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown key(s) in '{section}': {sorted(unknown)}; known: {sorted(known)}")
    defaults = cls()
    for key, value in d.items():
        # PyYAML reads "1e-3" (no dot) as a string: coerce scalars to the type of the field's default
        ref = getattr(defaults, key)
        if isinstance(ref, bool) or value is None:
            continue
        if isinstance(ref, (int, float)) and isinstance(value, str):
            try:
                d[key] = type(ref)(float(value)) if isinstance(ref, float) else int(value)
            except ValueError:
                raise ValueError(f"'{section}.{key}' must be a number, got {value!r}") from None
    return cls(**d)


@dataclass
class DataConfig:
    """Where training samples come from. Every source yields sequences; a sample is a
    ``(t-1, t, t+1)`` triplet inside one sequence.

    * ``sources``: ``synth:SEED:FRAMES`` (a synthetic drive rendered in memory) or paths, each a
      ``mv4d synth`` output folder (``bag`` + ``gt.npz``), a rosbag2 (folder or file), or a nuScenes
      dataroot (holding ``v1.0-*``). Relative paths are taken relative to the current directory.
    * ``synth_seeds`` / ``synth_frames``: sequences rendered in memory by
      :func:`mv4d_core.data.synth.generate_sequence` (no bag needed; same frames as ``mv4d synth``).
    * ``topic_map``: optional TopicMap YAML for bag sources (default: inferred from the bag).
    * ``nuscenes_version`` (default: the single ``v1.0-*`` folder), ``nuscenes_scenes`` (default all),
      ``frames``: ``"a:b"`` slice of each sequence's frames kept for training (default all).
    * ``occupancy_sweeps``: fuse LiDAR of frames ``t-k .. t+k`` into the occupancy labels (UniScene ±2).
    * ``lidar_min_depth_m`` / ``lidar_max_depth_m``: projected LiDAR depth kept for supervision.
    """

    sources: list[str] = field(default_factory=list)
    synth_seeds: list[int] = field(default_factory=list)
    synth_frames: int = 12
    topic_map: str | None = None
    nuscenes_version: str | None = None
    nuscenes_scenes: list[str] | None = None
    frames: str | None = None
    occupancy_sweeps: int = 2
    #: Folder for cached pre-computations (flow-teacher pseudo-labels), relative to the working directory.
    cache_dir: str = "runs/cache"
    #: Thickness prior of the occupancy labels: UNKNOWN voxels up to this far behind a LiDAR return
    #: along its ray are labelled occupied (a surface is the face of a solid); 0 = off.
    occupancy_solid_behind_m: float = 0.0
    #: Sweep pairs further apart than this get no flow supervision (Chamfer, flow teacher): at nuScenes'
    #: 2 Hz keyframes the ego moves ~3 m between sweeps and static structure finds false matches.
    flow_pair_max_dt_s: float = 0.2
    lidar_min_depth_m: float = 1.0
    lidar_max_depth_m: float = 80.0

    def validate(self) -> None:
        if not self.sources and not self.synth_seeds:
            raise ValueError("data: give at least one of data.sources (paths) or data.synth_seeds")
        if self.synth_seeds and self.synth_frames < 3:
            raise ValueError(f"data.synth_frames must be >= 3 for (t-1, t, t+1) triplets, got {self.synth_frames}")
        if self.occupancy_sweeps < 0:
            raise ValueError(f"data.occupancy_sweeps must be >= 0, got {self.occupancy_sweeps}")
        if self.flow_pair_max_dt_s <= 0:
            raise ValueError(f"data.flow_pair_max_dt_s must be > 0, got {self.flow_pair_max_dt_s}")


@dataclass
class RayConfig:
    """Ray sampling of one training step.

    ``rows x cols`` jittered lattice per camera (SelfOcc "cellular" lattice, SSIM-able);
    ``num_samples`` stratified samples per ray between ``near_m`` and the grid exit;
    ``lidar_rays`` extra rays per camera cast at random LiDAR pixels (0 = none);
    ``cos_anneal_steps``: NeuS cos-anneal ratio goes 0 -> 1 over these steps (0 = always 1);
    ``backend``: renderer ``reference`` | ``fused``; ``temporal_prev``: run frame t-1 (no grad) to
    feed the model's temporal fusion.
    """

    rows: int = 16
    cols: int = 32
    num_samples: int = 48
    near_m: float = 0.5
    lidar_rays: int = 256
    lidar_num_samples: int = 48
    #: LiDAR pixels per camera where the depth head is read (0 = ``lidar_rays``); cheap, no rendering.
    lidar_head_rays: int = 0
    cos_anneal_steps: int = 500
    backend: str = "fused"
    temporal_prev: bool = True

    def validate(self) -> None:
        if self.rows < 2 or self.cols < 2:
            raise ValueError(f"rays.rows/cols must be >= 2 (SSIM needs a lattice), got {self.rows}x{self.cols}")
        if self.num_samples < 2 or self.lidar_num_samples < 2:
            raise ValueError("rays.num_samples and rays.lidar_num_samples must be >= 2")
        if self.backend not in ("reference", "fused"):
            raise ValueError(f"rays.backend must be reference|fused, got {self.backend!r}")
        if self.lidar_rays < 0:
            raise ValueError(f"rays.lidar_rays must be >= 0, got {self.lidar_rays}")


@dataclass
class ExtraLossConfig:
    """Recipe terms beyond :class:`LossConfig` (0 = off).

    * ``flow_chamfer``: label-free LiDAR scene flow — truncated Chamfer distance between the
      non-ground LiDAR points of ``t`` moved by the predicted flow and ego motion, and the points
      of ``t+1`` (see :mod:`mv4d_core.losses.flow_chamfer`).
    * ``lidar_depth_head``: L1 of the depth *head* (the published per-camera depth) at LiDAR
      pixels, so real-data depth does not depend only on the render -> head distillation; fusion
      models read it at the pixels of the full sweep while their input lost some (masked LiDAR
      modelling), so it teaches completion.
    * ``flow_distill``: the cluster-ICP flow teacher's pseudo-labels (computed over the training
      sweeps, cached under ``data.cache_dir``) distilled into the flow head (ZeroFlow's recipe; see
      :mod:`mv4d_core.losses.flow_distill`), moving points weighted ``flow_distill_moving_weight``.
    * ``flow_ground_static``: LiDAR returns at or below ``chamfer_ground_z_m`` are road surface,
      which does not move: mean squared predicted displacement ``|v(p) dt|^2`` (m^2; see
      :class:`~mv4d_core.losses.flow_chamfer.GroundStaticFlowLoss` for why squared). The Chamfer term drops ground points (a flat road matches itself under any
      in-plane shift), so without this term nothing but the global sparsity prior holds the flow
      of the most common surface at zero.
    * ``flow_cycle``: forward-backward cycle consistency of the flow at frame t's non-ground LiDAR
      points against the network's own flow of frame t+1 (a second forward, without gradient, on
      frame t+1's cameras and sweep; :class:`~mv4d_core.losses.flow_chamfer.FlowCycleLoss`).
    * ``flow_point_read``: how every flow term reads the flow volume at a point, ``trilinear`` or
      ``voxel`` (the voxel holding the point: the value the published per-voxel flow gives it).

    The focal occupancy loss reads the model's own occupancy logit ``(margin - sdf) * inv_s``
    (``model.occupancy_sdf_margin_m``), so training and the published occupancy share one rule.
    """

    flow_chamfer: float = 0.0
    flow_ground_static: float = 0.0
    lidar_depth_head: float = 0.0
    #: The depth-head term as a relative error ``|d - d*| / d*`` (the AbsRel of the LiDAR pixels).
    lidar_depth_head_relative: bool = False
    #: Mean |log-depth residual| of the LiDAR-guided depth head: where no LiDAR pixel supervises it (above the
    #: LiDAR's field of view) the head keeps the classical completion instead of drifting.
    depth_residual: float = 0.0
    #: Distillation of the flow teacher's pseudo-labels (:mod:`mv4d_core.losses.flow_distill`).
    flow_distill: float = 0.0
    flow_distill_moving_weight: float = 10.0
    flow_cycle: float = 0.0
    flow_point_read: str = "trilinear"
    chamfer_points: int = 2048
    chamfer_truncate_m: float = 2.0
    chamfer_ground_z_m: float = 0.3

    def validate(self) -> None:
        for name in ("flow_chamfer", "flow_ground_static", "lidar_depth_head", "flow_distill", "depth_residual",
                     "flow_cycle"):
            if getattr(self, name) < 0:
                raise ValueError(f"extra_losses.{name} must be >= 0, got {getattr(self, name)}")
        from mv4d_core.losses.flow_chamfer import FLOW_READS

        if self.flow_point_read not in FLOW_READS:
            raise ValueError(f"extra_losses.flow_point_read must be {' | '.join(FLOW_READS)}, "
                             f"got {self.flow_point_read!r}")


@dataclass
class TrainConfig:
    """A complete training recipe (see the module docstring for the YAML layout)."""

    model: ModelConfig = field(default_factory=ModelConfig.tiny)
    losses: LossConfig = field(default_factory=LossConfig)
    extra_losses: ExtraLossConfig = field(default_factory=ExtraLossConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rays: RayConfig = field(default_factory=RayConfig)
    #: What the fusion model's LiDAR input loses at train time (ignored by camera-only models).
    lidar_masking: LidarMaskingConfig = field(default_factory=LidarMaskingConfig)
    #: torch intra-op threads (the CPU recipe shares a 2-core machine); 0 = torch default.
    threads: int = 0

    def validate(self) -> "TrainConfig":
        self.trainer.validate()
        self.data.validate()
        self.rays.validate()
        self.extra_losses.validate()
        self.lidar_masking.validate()
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown top-level training config key(s) {sorted(unknown)}; known: {sorted(known)}")
        model = dict(d.get("model") or {})
        extra = dict(d.get("extra_losses") or {})
        if "occupancy_sdf_margin_m" in extra:
            # Moved to the model config (inference uses it too); configs saved before the move carry it here.
            margin = extra.pop("occupancy_sdf_margin_m")
            if margin is not None:
                model.setdefault("occupancy_sdf_margin_m", margin)
        return cls(
            model=ModelConfig.from_dict(model) if model else ModelConfig.tiny(),
            losses=LossConfig.from_dict(d.get("losses") or {}),
            extra_losses=_strict(ExtraLossConfig, extra, "extra_losses"),
            trainer=_strict(TrainerConfig, d.get("trainer"), "trainer"),
            data=_strict(DataConfig, d.get("data"), "data"),
            rays=_strict(RayConfig, d.get("rays"), "rays"),
            lidar_masking=_strict(LidarMaskingConfig, d.get("lidar_masking"), "lidar_masking"),
            threads=int(d.get("threads", 0)),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config {path} does not exist")
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"training config {path} must be a mapping, got {type(data).__name__}")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "losses": self.losses.to_dict(),
                "extra_losses": asdict(self.extra_losses), "trainer": asdict(self.trainer),
                "data": asdict(self.data), "rays": asdict(self.rays), "lidar_masking": {**asdict(self.lidar_masking), "sector_deg": list(self.lidar_masking.sector_deg)},
                "threads": self.threads}

    def save_yaml(self, path: str | Path) -> None:
        import yaml

        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False)
