"""Inference engines behind one numpy interface (``torch``, ``onnxruntime``, ``tensorrt``) and
checkpoint loading. A leaf layer above the models: pipeline, eval, export, demo and the ROS node
import it; it imports nothing above ``mv4d_core.models``."""

from mv4d_core.engines.base import Engine, EngineError, EngineInputs, EngineOutputs, EngineSpec
from mv4d_core.engines.checkpoint import default_checkpoint, default_onnx, load_checkpoint, load_checkpoint_model
from mv4d_core.engines.registry import ENGINE_NAMES, create_engine

__all__ = ["Engine", "EngineError", "EngineInputs", "EngineOutputs", "EngineSpec", "ENGINE_NAMES", "create_engine",
           "default_checkpoint", "default_onnx", "load_checkpoint", "load_checkpoint_model"]
