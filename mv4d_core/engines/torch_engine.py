"""The PyTorch engine: ``MV4DModel`` in eval mode, no gradients, fed by the shared named inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mv4d_core.engines.arrays import engine_outputs, model_feeds
from mv4d_core.engines.base import Engine, EngineError, EngineInputs, EngineOutputs, EngineSpec
from mv4d_core.engines.checkpoint import load_checkpoint_model


class TorchEngine(Engine):
    """Keeps ``state_volume`` of the previous call (a tensor on the device) for temporal fusion."""

    def __init__(self, model, model_config, device: str = "cpu", name: str = "torch") -> None:
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError(f"device {device!r} requested but CUDA is not available", "device")
        self.torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.model_config = model_config
        self.spec = EngineSpec.from_model_config(model_config, name)
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
        model, cfg = load_checkpoint_model(path)
        return cls(model, cfg, device, name=f"torch:{Path(path).name}")

    def reset(self) -> None:
        self._state = None

    def infer(self, inputs: EngineInputs) -> EngineOutputs:
        from mv4d_core.models.inputs import ModelInputs

        self.check_inputs(inputs)
        torch = self.torch
        feeds, fused = model_feeds(inputs, self._state, self.model_config)
        tensors = {k: torch.as_tensor(v).to(self.device) for k, v in feeds.items()}
        with torch.inference_mode():
            named = self.model(ModelInputs(**tensors)).inference_tensors()
        self._state = named.pop("state_volume")
        arrays = {k: v.detach().float().cpu().numpy() for k, v in named.items()}
        arrays["state_volume"] = np.empty(0, np.float32)   # kept on the device in self._state
        return engine_outputs(arrays, fused)
