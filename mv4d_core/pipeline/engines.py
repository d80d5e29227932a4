"""Inference engines behind one numpy-level interface.

An :class:`Engine` takes one rig sample already at the model size (:class:`EngineInputs`) and
returns batch-free numpy volumes and depth maps (:class:`EngineOutputs`). Keeping the interface
in numpy lets onnxruntime / TensorRT engines (issue "export") drop in without touching the
pipeline; only :class:`TorchEngine` exists so far. Engines own their temporal state (the previous
frame's volume) and forget it on :meth:`Engine.reset`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mv4d_core.geometry.voxel_grid import VoxelGridSpec


class EngineError(RuntimeError):
    """An engine cannot be created or run (missing file, unsupported backend, bad inputs)."""


@dataclass(frozen=True)
class EngineSpec:
    """What an engine expects and produces.

    ``image_hw``: model input ``(h, w)``; ``grid``: output volume in base_link; ``depth_stride``:
    model image size / depth map size; ``num_cameras``: fixed camera count (None = any)."""

    image_hw: tuple[int, int]
    grid: VoxelGridSpec
    depth_stride: int = 4
    num_cameras: int | None = None
    name: str = ""


@dataclass
class EngineInputs:
    """One rig sample at the model size.

    * ``images`` ``(N, 3, h, w)`` float32 RGB in [0, 1]
    * ``intrinsics`` ``(N, 3, 3)`` float32 for ``h x w``
    * ``T_base_cam`` ``(N, 4, 4)`` float32 optical camera -> base_link
    * ``T_prev_cur`` ``(4, 4)`` float32 current base_link -> previous base_link, or None when the
      previous frame is unknown (first frame, after a reset); engines drop their state then.
    """

    images: np.ndarray
    intrinsics: np.ndarray
    T_base_cam: np.ndarray
    T_prev_cur: np.ndarray | None = None


@dataclass
class EngineOutputs:
    """Batch-free results in base_link.

    * ``occupancy_prob`` ``(X, Y, Z)`` float32 in [0, 1]
    * ``labels`` ``(X, Y, Z)`` uint8 class ids (see ``mv4d_core.data.classes``), or None
    * ``flow_mps`` ``(X, Y, Z, 3)`` float32 m/s along base_link axes, or None
    * ``depth_m`` ``(N, h / depth_stride, w / depth_stride)`` float32 optical-z metres, or None
    * ``fused_previous``: whether the previous frame's state was fused into this result; None when
      the engine does not say (the pipeline then assumes it was whenever ``T_prev_cur`` was given)
    """

    occupancy_prob: np.ndarray
    labels: np.ndarray | None = None
    flow_mps: np.ndarray | None = None
    depth_m: np.ndarray | None = None
    fused_previous: bool | None = None


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


class TorchEngine(Engine):
    """The PyTorch ``MV4DModel`` (``mv4d_core.models``) in eval mode, no gradients.

    Keeps ``ModelOutputs.state_volume`` of the previous call for temporal fusion when the model
    config enables it.
    """

    def __init__(self, model, model_config, device: str = "cpu", name: str = "torch") -> None:
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError(f"device {device!r} requested but CUDA is not available")
        self.torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.model_config = model_config
        self.spec = EngineSpec(image_hw=(model_config.image_height, model_config.image_width),
                               grid=model_config.grid, depth_stride=model_config.depth_stride,
                               num_cameras=model_config.num_cameras, name=name)
        self._state = None

    @classmethod
    def from_model_config(cls, model_config, device: str = "cpu", seed: int = 0) -> "TorchEngine":
        """A randomly initialised (untrained) model: only for tests and benchmarks of the plumbing."""
        import torch

        from mv4d_core.models import build_model

        torch.manual_seed(seed)
        return cls(build_model(model_config), model_config, device, name=f"torch:{model_config.name}:untrained")

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> "TorchEngine":
        """Load a checkpoint holding the model config and weights (see :func:`load_checkpoint_model`)."""
        model, cfg = load_checkpoint_model(path)
        return cls(model, cfg, device, name=f"torch:{Path(path).name}")

    def reset(self) -> None:
        self._state = None

    def infer(self, inputs: EngineInputs) -> EngineOutputs:
        from mv4d_core.models.inputs import ModelInputs

        self.check_inputs(inputs)
        torch = self.torch

        def t(a):
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None].to(self.device)

        temporal = inputs.T_prev_cur is not None and self._state is not None
        mi = ModelInputs(t(inputs.images), t(inputs.intrinsics), t(inputs.T_base_cam),
                         t(inputs.T_prev_cur) if temporal else None, self._state if temporal else None)
        with torch.inference_mode():
            out = self.model(mi)
        self._state = getattr(out, "state_volume", None)
        result = engine_outputs_from_model(out)
        # A model built with temporal=False ignores the previous volume even when it is passed.
        result.fused_previous = temporal and getattr(self.model, "temporal", None) is not None
        return result


def engine_outputs_from_model(out) -> EngineOutputs:
    """``ModelOutputs`` (batch of 1) -> :class:`EngineOutputs` numpy arrays."""
    import torch

    def np1(name):
        v = getattr(out, name, None)
        return None if v is None else v[0].detach().float().cpu().numpy()

    prob = np1("occupancy_prob")
    if prob is None:
        raise EngineError("model outputs have no occupancy_prob")
    labels = None
    logits = getattr(out, "semantic_logits", None)
    if logits is not None:
        labels = logits[0].argmax(0).to(dtype=torch.uint8).cpu().numpy()
    flow = np1("flow_mps")
    if flow is not None:
        flow = np.moveaxis(flow, 0, -1)  # (3, X, Y, Z) -> (X, Y, Z, 3)
    return EngineOutputs(occupancy_prob=prob.astype(np.float32), labels=labels,
                         flow_mps=None if flow is None else np.ascontiguousarray(flow, dtype=np.float32),
                         depth_m=np1("depth_m"))


def load_checkpoint_model(path: str | Path):
    """``(model, ModelConfig)`` from a checkpoint dict with the model config (key ``model_config``
    or ``config``/``config.model``) and the weights (``ema`` if present, else ``model`` or ``state_dict``)."""
    from mv4d_core.models import ModelConfig, build_model
    from mv4d_core.training.checkpoint import load

    try:
        ckpt = load(path)
    except (FileNotFoundError, ValueError) as e:
        raise EngineError(str(e)) from None
    if not isinstance(ckpt, dict):
        raise EngineError(f"checkpoint {path}: expected a dict, got {type(ckpt).__name__}")
    cfg_dict = ckpt.get("model_config")
    if cfg_dict is None and isinstance(ckpt.get("config"), dict):
        cfg_dict = ckpt["config"].get("model", ckpt["config"])
    if cfg_dict is None:
        raise EngineError(f"checkpoint {path}: no 'model_config' entry (keys: {sorted(ckpt)})")
    cfg = cfg_dict if isinstance(cfg_dict, ModelConfig) else ModelConfig.from_dict(cfg_dict)
    # Trainer checkpoints carry the EMA weights next to the raw ones: inference uses the EMA.
    state = next((ckpt[k] for k in ("ema", "model", "state_dict") if ckpt.get(k) is not None), None)
    if state is None:
        raise EngineError(f"checkpoint {path}: no 'ema'/'model'/'state_dict' weights (keys: {sorted(ckpt)})")
    model = build_model(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise EngineError(f"checkpoint {path}: weights do not fit the model config: {e}") from None
    return model, cfg


def default_checkpoint() -> Path | None:
    """The weights shipped inside the package (``mv4d_core/weights/*.pt``), or None when absent."""
    folder = Path(__file__).resolve().parents[1] / "weights"
    found = sorted(folder.glob("*.pt")) if folder.is_dir() else []
    return found[0] if found else None


def create_engine(engine: str, checkpoint: str = "", device: str = "cpu") -> Engine:
    """The engine named by the ``engine`` parameter. Errors name the parameter at fault."""
    from mv4d_core.pipeline.config import ConfigError

    if engine == "torch":
        path = Path(checkpoint) if checkpoint else default_checkpoint()
        if path is None:
            raise ConfigError("checkpoint", "empty and no default weights are shipped in mv4d_core/weights/")
        if not path.is_file():
            raise ConfigError("checkpoint", f"file {path} does not exist")
        try:
            return TorchEngine.from_checkpoint(path, device)
        except EngineError as e:
            raise ConfigError("checkpoint" if "CUDA" not in str(e) else "device", str(e)) from None
    if engine in ("onnxruntime", "tensorrt"):
        from mv4d_core.export.factory import create_export_engine  # checkpoint = a .onnx from `mv4d export`

        return create_export_engine(engine, checkpoint, device)
    raise ConfigError("engine", f"unknown engine {engine!r}")
