"""The contract between ``mv4d export`` and the exported-graph engines: input/output names and the
``mv4d.*`` metadata stored in every exported ``.onnx`` file (model config, names, format version).

Engines need nothing but the file: :func:`read_model_info` returns everything they need.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from mv4d_core.engines.base import EngineError

#: Bumped when the graph's inputs/outputs change meaning; engines refuse files of another version.
FORMAT_VERSION = 3
META_PREFIX = "mv4d."


@dataclass(frozen=True)
class OnnxModelInfo:
    """The mv4d metadata of an exported file (see :func:`read_model_info`)."""

    model_config: object  # ModelConfig
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    temporal: bool
    dynamic_batch: bool
    opset: int
    format_version: int
    source: str


def onnx_opset(proto) -> int:
    """Opset of the default ONNX domain."""
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise EngineError("the ONNX file imports no default-domain opset", "checkpoint")


def load_proto(path: Path):
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and friends for non-ONNX bytes
        raise EngineError(f"{path} is not a readable ONNX file ({type(e).__name__}: {e})", "checkpoint") from None


def read_model_info(path: str | Path) -> OnnxModelInfo:
    """The mv4d metadata of ``path``; :class:`EngineError` (parameter ``checkpoint``) for files not
    written by ``mv4d export`` or by an mv4d with another :data:`FORMAT_VERSION`."""
    from mv4d_core.models import ModelConfig

    path = Path(path)
    if not path.is_file():
        raise EngineError(f"ONNX file {path} does not exist", "checkpoint")
    proto = load_proto(path)
    meta = {p.key[len(META_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(META_PREFIX)}
    if "model_config" not in meta:
        raise EngineError(f"{path} has no mv4d metadata (export it with `mv4d export`)", "checkpoint")
    version = int(meta.get("format_version", "0"))
    if version != FORMAT_VERSION:
        raise EngineError(f"{path} has mv4d format_version {version}; this mv4d reads {FORMAT_VERSION} "
                          "(re-export it with `mv4d export`)", "checkpoint")
    return OnnxModelInfo(
        model_config=ModelConfig.from_dict(json.loads(meta["model_config"])),
        input_names=tuple(json.loads(meta["inputs"])), output_names=tuple(json.loads(meta["outputs"])),
        temporal=bool(json.loads(meta["temporal"])), dynamic_batch=bool(json.loads(meta["dynamic_batch"])),
        opset=onnx_opset(proto), format_version=version, source=meta.get("source", ""))


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (the model part of TensorRT engine cache keys)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()
