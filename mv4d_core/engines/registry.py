"""``create_engine``: the engine named by the ``engine`` parameter (``torch | onnxruntime | tensorrt``).

``checkpoint`` is a ``.pt`` checkpoint for ``torch`` and a ``.onnx`` file from ``mv4d export`` for the
exported-graph engines; empty means the file shipped in ``mv4d_core/weights/``. A ``.pt`` given to
an exported-graph engine is refused with the command that exports it (exporting inside a node start
would hide a ~15 s step and write next to the weights). Errors are :class:`EngineError` naming the
parameter at fault.
"""

from __future__ import annotations

from pathlib import Path

from mv4d_core.engines.base import Engine, EngineError
from mv4d_core.engines.checkpoint import default_checkpoint, default_onnx

ENGINE_NAMES: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt")


def _existing(path: Path | None, what: str) -> Path:
    if path is None:
        raise EngineError(f"empty and no {what} is shipped in mv4d_core/weights/", "checkpoint")
    if not path.is_file():
        raise EngineError(f"file {path} does not exist", "checkpoint")
    return path


def _onnx_path(checkpoint: str, engine: str) -> Path:
    path = Path(checkpoint) if checkpoint else default_onnx()
    if path is None:
        raise EngineError(f"empty and no exported model (mv4d_core/weights/*.onnx) is shipped; engine {engine!r} "
                          "needs a .onnx file from `mv4d export`", "checkpoint")
    if path.suffix != ".onnx":
        raise EngineError(f"engine {engine!r} needs an exported .onnx file, got {path}; export it with "
                          f"`mv4d export --checkpoint {path} --onnx {path.with_suffix('.onnx')}`", "checkpoint")
    return _existing(path, "exported model")


def create_engine(engine: str, checkpoint: str = "", device: str = "cpu", precision: str = "fp32",
                  cache_dir: str | None = None, lidar: bool = False) -> Engine:
    """Build the engine; an empty ``checkpoint`` takes the shipped weights (the fusion ones with
    ``lidar``); TensorRT: ``precision`` fp32|fp16, engines cached in ``cache_dir`` (default: next to the
    ONNX file)."""
    if engine == "torch":
        from mv4d_core.engines.torch_engine import TorchEngine

        path = _existing(Path(checkpoint) if checkpoint else default_checkpoint(lidar), "default weights")
        return TorchEngine.from_checkpoint(path, device)
    if engine == "onnxruntime":
        from mv4d_core.engines.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(_onnx_path(checkpoint, engine), device)
    if engine == "tensorrt":
        from mv4d_core.engines.tensorrt_engine import TensorRTEngine, require_tensorrt

        require_tensorrt()
        return TensorRTEngine(_onnx_path(checkpoint, engine), precision, device, cache_dir or None)
    raise EngineError(f"unknown engine {engine!r} (one of {list(ENGINE_NAMES)})", "engine")
