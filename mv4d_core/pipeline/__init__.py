"""Inference pipeline shared by the ROS node and the offline tools: parameters (``config``),
engines (``engines``), ``PerceptionPipeline`` (``pipeline``) and message-ready arrays (``postprocess``).

Attributes are imported lazily so reading parameters does not import torch.
"""

from __future__ import annotations

_EXPORTS = {
    "PerceptionConfig": "mv4d_core.pipeline.config",
    "ConfigError": "mv4d_core.pipeline.config",
    "Engine": "mv4d_core.pipeline.engines",
    "TorchEngine": "mv4d_core.pipeline.engines",
    "create_engine": "mv4d_core.pipeline.engines",
    "PerceptionPipeline": "mv4d_core.pipeline.pipeline",
    "FrameError": "mv4d_core.pipeline.pipeline",
    "output_arrays": "mv4d_core.pipeline.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mv4d_core.pipeline' has no attribute {name!r}")
