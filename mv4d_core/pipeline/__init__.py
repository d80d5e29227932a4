"""Inference pipeline shared by the ROS node and the offline tools: parameters (``config``),
``PerceptionPipeline`` (``pipeline``), the published record (``outputs``), the stamp rule (``stamps``)
and message-ready arrays (``postprocess``, ``messages``). Engines live in ``mv4d_core.engines``.

Attributes are imported lazily so reading parameters does not import torch.
"""

from __future__ import annotations

_EXPORTS = {
    "PerceptionConfig": "mv4d_core.pipeline.config",
    "ConfigError": "mv4d_core.pipeline.config",
    "PerceptionPipeline": "mv4d_core.pipeline.pipeline",
    "PerceptionOutputs": "mv4d_core.pipeline.outputs",
    "FrameError": "mv4d_core.pipeline.pipeline",
    "LateFrame": "mv4d_core.pipeline.pipeline",
    "output_arrays": "mv4d_core.pipeline.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mv4d_core.pipeline' has no attribute {name!r}")
