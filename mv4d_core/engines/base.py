"""The engine interface: one rig sample in (numpy, model size), batch-free numpy results out.

Every backend (``torch``, ``onnxruntime``, ``tensorrt``) implements :class:`Engine`; the pipeline,
``mv4d eval``, ``mv4d infer``, the demo and the ROS node only see this interface. Engines own their
temporal state (the previous frame's volume) and forget it on :meth:`Engine.reset`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from mv4d_core.geometry.voxel_grid import VoxelGridSpec


class EngineError(RuntimeError):
    """An engine cannot be created or run (missing file, unsupported backend, bad inputs).

    ``parameter`` names the setting at fault (``checkpoint``, ``device``, ``engine``) when there is one."""

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter

    def for_cli(self) -> str:
        """The message for a command line: ``--checkpoint: file x does not exist``."""
        return f"--{self.parameter}: {self}" if self.parameter else str(self)


@dataclass(frozen=True)
class EngineSpec:
    """What an engine expects and produces.

    ``image_hw``: model input ``(h, w)``; ``grid``: output volume in base_link; ``depth_stride``:
    model image size / depth map size; ``num_cameras``: fixed camera count (None = any, the mv4d
    network); ``temporal``: whether the model fuses the previous frame; ``lidar``: the model's
    :class:`~mv4d_core.models.config.LidarConfig` when it takes the LiDAR as an input, else None."""

    image_hw: tuple[int, int]
    grid: VoxelGridSpec
    depth_stride: int = 4
    num_cameras: int | None = None
    name: str = ""
    temporal: bool = True
    lidar: object | None = None

    @classmethod
    def from_model_config(cls, cfg, name: str) -> "EngineSpec":
        return cls(image_hw=(cfg.image_height, cfg.image_width), grid=cfg.grid, depth_stride=cfg.depth_stride,
                   num_cameras=None, name=name, temporal=cfg.temporal,
                   lidar=cfg.lidar if cfg.lidar.enabled else None)


@dataclass
class EngineInputs:
    """One rig sample at the model size.

    * ``images`` ``(N, 3, h, w)`` float32 RGB in [0, 1]
    * ``intrinsics`` ``(N, 3, 3)`` float32 for ``h x w``
    * ``T_base_cam`` ``(N, 4, 4)`` float32 optical camera -> base_link
    * ``T_prev_cur`` ``(4, 4)`` float32 current base_link -> previous base_link, or None when the
      previous frame is unknown (first frame, after a reset); engines drop their state then.
    * ``lidar_volume`` ``(C, X, Y, Z)`` and ``lidar_depth`` ``(N, 3, h, w)`` float32 (see
      :mod:`mv4d_core.models.lidar_inputs`) for fusion models, or None: the sample is then processed
      camera-only.
    """

    images: np.ndarray
    intrinsics: np.ndarray
    T_base_cam: np.ndarray
    T_prev_cur: np.ndarray | None = None
    lidar_volume: np.ndarray | None = None
    lidar_depth: np.ndarray | None = None


@dataclass
class EngineOutputs:
    """Batch-free results in base_link.

    * ``occupancy_prob`` ``(X, Y, Z)`` float32 in [0, 1]
    * ``flow_mps`` ``(X, Y, Z, 3)`` float32 m/s along base_link axes
    * ``motion_prob`` ``(X, Y, Z)`` float32 probability that the voxel content moves
    * ``depth_m`` ``(N, h / depth_stride, w / depth_stride)`` float32 optical-z metres
    * ``fused_previous``: whether the previous frame's state was fused into this result
    """

    occupancy_prob: np.ndarray
    flow_mps: np.ndarray
    depth_m: np.ndarray
    fused_previous: bool = False
    motion_prob: np.ndarray | None = None


class Engine(abc.ABC):
    """Runs the network on one sample. Subclasses set :attr:`spec` and implement :meth:`infer`."""

    spec: EngineSpec

    @abc.abstractmethod
    def infer(self, inputs: EngineInputs) -> EngineOutputs:
        """Run one sample; with ``inputs.T_prev_cur`` set, fuse the state kept from the previous call."""

    def reset(self) -> None:
        """Forget temporal state (the next :meth:`infer` behaves like the first)."""

    def check_inputs(self, inputs: EngineInputs) -> None:
        n = inputs.images.shape[0]
        h, w = self.spec.image_hw
        if inputs.images.shape != (n, 3, h, w):
            raise EngineError(f"engine {self.spec.name!r}: images must be (N, 3, {h}, {w}), got {inputs.images.shape}")
        if self.spec.num_cameras is not None and n != self.spec.num_cameras:
            raise EngineError(f"engine {self.spec.name!r}: expects {self.spec.num_cameras} cameras, got {n}")
