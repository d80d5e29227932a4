"""Typed, YAML-loadable configuration of the mv4d network (one architecture, several sizes).

``ModelConfig.tiny()`` is the CPU-trainable size (6 x 96x176 images, TINY grid 100x100x8 @0.8 m,
48 depth bins over 1-48 m); ``ModelConfig.base()`` is the single-GPU size (6 x 256x704, OCC3D grid
200x200x16 @0.4 m, 118 bins over 1-59.5 m). Both run the same code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from mv4d_core.geometry.voxel_grid import OCC3D, TINY, VoxelGridSpec


@dataclass(frozen=True)
class BackboneConfig:
    """ResNet-style 2D encoder: a stride-2 stem then ``len(stage_channels)`` stages of BasicBlocks,
    each halving the resolution (strides 4, 8, 16, ...)."""

    stem_channels: int = 16
    stage_channels: tuple[int, ...] = (32, 96, 192)
    blocks_per_stage: tuple[int, ...] = (1, 2, 2)
    #: GroupNorm groups (batch statistics are unreliable at batch 1 x 6 cameras).
    norm_groups: int = 8


@dataclass(frozen=True)
class MaskingConfig:
    """MAE-style input masking (UniPAD/MIM4D): zero ``ratio`` of the ``patch_size`` px patches
    while training. Off by default; never applied in eval mode."""

    enabled: bool = False
    ratio: float = 0.3
    patch_size: int = 16


@dataclass(frozen=True)
class DepthConfig:
    """Categorical depth bins with centres ``linspace(min_m, max_m, num_bins)`` (optical z, metres)."""

    min_m: float = 1.0
    max_m: float = 48.0
    num_bins: int = 48


@dataclass(frozen=True)
class LidarConfig:
    """The LiDAR branch (off = a camera-only model). Inputs come from
    :mod:`mv4d_core.models.lidar_inputs`: a voxel volume of the current sweep plus ``previous_sweeps``
    ego-compensated earlier sweeps, fused with the camera volume before the 3D neck through
    ``encoder_channels`` channels; and per-camera sparse depth + a classical completion that guide a
    full-resolution depth head (``depth_refine``, ``refine_channels`` wide), so the published depth
    is at the model image size instead of stride 4."""

    enabled: bool = False
    previous_sweeps: int = 1
    encoder_channels: int = 8
    #: 3x3x3 conv layers of the LiDAR encoder (two see a displacement of a voxel or two between sweeps).
    encoder_layers: int = 1
    depth_refine: bool = True
    refine_channels: int = 16
    #: The depth head changes its base only within this many pixels of an input LiDAR pixel (0: everywhere):
    #: where no LiDAR reaches (above its field of view, a dropped sector) nothing trains the change,
    #: so the classical completion stands.
    refine_support_px: int = 0
    #: A voxel holding a return of the current sweep is published occupied (probability 1; the network's
    #: elsewhere). A return is a surface: the network's probability there is only worth less.
    hits_occupied: bool = False
    #: Clouds above this are subsampled (every k-th point) before pre-processing.
    max_points: int = 200_000
    #: Ray-cast free-space channel (costs most of the pre-processing time).
    free_space: bool = True


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the network's shapes. ``grid`` is the output volume in base_link."""

    name: str = "tiny"
    #: Cameras of the rig the recipe trains on; the network itself runs on any number (cameras are data).
    num_cameras: int = 6
    image_height: int = 96
    image_width: int = 176
    grid: VoxelGridSpec = TINY
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    #: Channels of the multi-scale neck output (stride 8) used for depth + context.
    neck_channels: int = 64
    #: Context channels splatted into the volume by LSS.
    volume_channels: int = 32
    #: Channels of the 3D neck output that feeds the heads.
    head_channels: int = 16
    #: Number of Conv3d 3x3x3 layers in the 3D neck.
    neck3d_layers: int = 2
    #: Temporal fusion of the ego-warped previous volume (concat + 1x1x1 conv).
    temporal: bool = True
    #: Ground height in base_link (m); the SDF head starts at ``s = z - ground_z_m``.
    ground_z_m: float = 0.0
    #: Initial NeuS sharpness parameter v (inv_s = exp(10 v)); SelfOcc 0.1, UniPAD 0.3.
    sharpness_init: float = 0.1
    #: Floor under the learned NeuS sharpness (inv_s = floor + exp(10 v)); 0 = plain NeuS.
    sharpness_min_inv_s: float = 0.0
    #: A voxel is occupied when its centre's SDF is <= this margin (None = half the smallest voxel
    #: edge): the voxel then overlaps the surface or the solid behind it, which is how LiDAR-fused
    #: labels (UniScene, Occ3D) and the synthetic GT define occupied voxels. 0 = SelfOcc's ``s <= 0``.
    occupancy_sdf_margin_m: float | None = None
    #: Gate the flow head: ``flow = velocity * sigmoid(gate_logit)`` (one more 1x1x1 conv).
    flow_gate: bool = False
    #: LiDAR as a network input (see :class:`LidarConfig`).
    lidar: LidarConfig = field(default_factory=LidarConfig)

    @property
    def occupancy_margin_m(self) -> float:
        """The SDF level (m) at which ``occupancy_prob`` crosses 0.5."""
        m = self.occupancy_sdf_margin_m
        return 0.5 * min(self.grid.voxel_size) if m is None else float(m)

    @property
    def feature_stride(self) -> int:
        """Stride of the LSS features (the neck output): 8."""
        return 8

    @property
    def depth_stride(self) -> int:
        """Stride of the published per-camera depth map: 1 with the LiDAR-guided depth head, else 4."""
        return 1 if self.lidar.enabled and self.lidar.depth_refine else 4

    def __post_init__(self) -> None:
        s = 2 ** (len(self.backbone.stage_channels) + 1)
        if len(self.backbone.stage_channels) < 2:
            raise ValueError("backbone.stage_channels needs at least 2 stages (stride 4 and 8)")
        if len(self.backbone.blocks_per_stage) != len(self.backbone.stage_channels):
            raise ValueError("backbone.blocks_per_stage must have one entry per stage_channels entry")
        if self.image_height % s or self.image_width % s:
            raise ValueError(f"image_height/image_width ({self.image_height}x{self.image_width}) must be "
                             f"multiples of the deepest stride {s}")
        if not 0.0 <= self.masking.ratio < 1.0:
            raise ValueError(f"masking.ratio must be in [0, 1), got {self.masking.ratio}")
        if self.depth.num_bins < 2 or self.depth.max_m <= self.depth.min_m or self.depth.min_m <= 0:
            raise ValueError(f"depth bins need num_bins >= 2 and 0 < min_m < max_m, got {self.depth}")
        if self.lidar.previous_sweeps < 0 or self.lidar.encoder_channels < 1 or self.lidar.refine_channels < 1:
            raise ValueError(f"lidar needs previous_sweeps >= 0 and encoder/refine channels >= 1, got {self.lidar}")

    @classmethod
    def tiny(cls) -> "ModelConfig":
        return cls()

    @classmethod
    def base(cls) -> "ModelConfig":
        return cls(
            name="base", image_height=256, image_width=704, grid=OCC3D,
            backbone=BackboneConfig(stem_channels=32, stage_channels=(64, 128, 256, 512),
                                    blocks_per_stage=(2, 2, 2, 2), norm_groups=16),
            masking=MaskingConfig(enabled=False, ratio=0.3, patch_size=32),
            depth=DepthConfig(min_m=1.0, max_m=59.5, num_bins=118),
            neck_channels=128, volume_channels=64, head_channels=32)

    @classmethod
    def named(cls, name: str) -> "ModelConfig":
        presets = {"tiny": cls.tiny, "base": cls.base}
        if name not in presets:
            raise ValueError(f"unknown model size {name!r}; choose one of {sorted(presets)}")
        return presets[name]()

    def replace(self, **changes) -> "ModelConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grid"] = self.grid.to_dict()
        for sub in ("backbone", "masking", "depth", "lidar"):
            d[sub] = {k: list(v) if isinstance(v, tuple) else v for k, v in d[sub].items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Build from a dict; a ``size``/``base`` key picks the preset that the other keys override."""
        d = dict(d)
        # A semantic head needs labels, which mv4d's label-free recipes do not have; a stored 0 means none.
        if d.pop("num_semantic_classes", 0):
            raise ValueError("ModelConfig: semantic heads are not supported (num_semantic_classes must be 0)")
        preset = d.pop("size", None) or d.pop("preset", None)
        start = cls.named(preset) if preset else cls()
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        changes = {}
        for key, value in d.items():
            if key == "grid":
                value = value if isinstance(value, VoxelGridSpec) else VoxelGridSpec.from_dict(value)
            elif key in ("backbone", "masking", "depth", "lidar"):
                sub_cls = {"backbone": BackboneConfig, "masking": MaskingConfig, "depth": DepthConfig,
                           "lidar": LidarConfig}[key]
                sub_known = {f.name for f in fields(sub_cls)}
                bad = set(value) - sub_known
                if bad:
                    raise ValueError(f"unknown ModelConfig.{key} keys: {sorted(bad)}")
                value = replace(getattr(start, key),
                                **{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
            changes[key] = value
        return replace(start, **changes)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ModelConfig":
        import yaml

        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        if "model" in data and isinstance(data["model"], dict):
            data = data["model"]
        return cls.from_dict(data)

    def save_yaml(self, path: str | Path) -> None:
        import yaml

        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False)
