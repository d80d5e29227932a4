"""``create_engine`` support for the exported-model engines (``onnxruntime``, ``tensorrt``).

``checkpoint`` is the ``.onnx`` file written by ``mv4d export``; empty means the ``.onnx`` shipped in
``mv4d_core/weights/`` when there is one. A ``.pt`` checkpoint is refused with the command that
exports it (exporting inside a node start would hide a ~15 s step and write next to the weights).
Errors are :class:`ConfigError` naming the parameter at fault.
"""

from __future__ import annotations

from pathlib import Path

from mv4d_core.pipeline.config import ConfigError
from mv4d_core.pipeline.engines import Engine, EngineError

def default_onnx() -> Path | None:
    """The exported model shipped inside the package (``mv4d_core/weights/*.onnx``), or None."""
    folder = Path(__file__).resolve().parents[1] / "weights"
    found = sorted(folder.glob("*.onnx")) if folder.is_dir() else []
    return found[0] if found else None


def resolve_onnx(checkpoint: str, engine: str) -> Path:
    path = Path(checkpoint) if checkpoint else default_onnx()
    if path is None:
        raise ConfigError("checkpoint", f"empty and no exported model (mv4d_core/weights/*.onnx) is shipped; "
                                        f"engine {engine!r} needs a .onnx file from `mv4d export`")
    if path.suffix != ".onnx":
        raise ConfigError("checkpoint", f"engine {engine!r} needs an exported .onnx file, got {path}; export it with "
                                        f"`mv4d export --checkpoint {path} --onnx {path.with_suffix('.onnx')}`")
    if not path.is_file():
        raise ConfigError("checkpoint", f"file {path} does not exist")
    return path


def create_export_engine(engine: str, checkpoint: str = "", device: str = "cpu", precision: str = "fp32",
                         cache_dir: str | None = None) -> Engine:
    """An :class:`OnnxRuntimeEngine` or :class:`TensorRTEngine` for ``checkpoint`` (a ``.onnx`` path).

    TensorRT: ``precision`` fp32|fp16, engines cached in ``cache_dir`` (default: next to the ONNX file).
    """
    path = resolve_onnx(checkpoint, engine)
    try:
        if engine == "onnxruntime":
            from mv4d_core.export.engines_onnx import OnnxRuntimeEngine

            return OnnxRuntimeEngine(path, device)
        if engine == "tensorrt":
            from mv4d_core.export.engines_tensorrt import TensorRTEngine, require_tensorrt

            try:
                require_tensorrt()
            except EngineError as e:
                raise ConfigError("engine", str(e)) from None
            return TensorRTEngine(path, precision, device, cache_dir or None)
    except EngineError as e:
        text = str(e)
        raise ConfigError("device" if ("CUDA" in text or "device" in text) else "checkpoint", text) from None
    raise ConfigError("engine", f"unknown exported-model engine {engine!r}")
