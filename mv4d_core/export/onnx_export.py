"""Export the mv4d inference graph to one self-contained ONNX file (torch dynamo exporter, opset 18).

What is exported: :class:`mv4d_core.export.graph.InferenceGraph`, i.e. the eval-mode model from
camera images + intrinsics + extrinsics (+ previous volume + ego motion when the model is temporal)
to occupancy probability, SDF, flow, colour, per-camera depth and the state volume for the next
frame. Input/output names and shapes are listed in ``graph``'s docstring and stored in the file.

Decisions (each checked in ``test/test_export.py``):

* **Exporter and format.** ``torch.onnx.export(..., dynamo=True, external_data=False)``: the dynamo
  exporter is the supported one in torch 2.13; ``external_data=False`` keeps the weights inside the
  ``.onnx`` file (dynamo writes ``.onnx.data`` otherwise) so one file is the deployable artefact.
  Opset 18: the dynamo exporter cannot down-convert below 18 (dependencies.md section 3), and
  TensorRT 10 parses opsets 9-20; requesting an opset < 18 is refused with an error.
* **LSS voxel pooling** (``index_add`` of the points that fall inside the grid, i.e. boolean indexing
  with a data-dependent count) is restated as :func:`graph.voxel_pool_static`: every frustum point is
  scattered, outside points into a per-sample dump row that is sliced off. One ``ScatterND`` with
  ``reduction="add"``; shapes depend on the config only. Non-finite points fail the range
  comparisons, so no ``IsInf``/``IsNaN`` ops are emitted (TensorRT 8.x cannot parse ``IsInf``), and
  per-axis ANDs replace ``all()`` (no ReduceMin over booleans). Not verified here (no TensorRT on the
  development machines): that a given TensorRT's parser accepts ScatterND's ``reduction`` attribute
  (opset 16+). The frustum -> voxel index is computed *inside* the graph from the
  ``intrinsics``/``T_base_cam`` inputs (element-wise ops on ~76k points for the tiny config), so one
  exported file serves any rig calibration and the ROS node can take extrinsics from /tf_static at
  run time; precomputing the index map outside the graph would only pay off for a fixed rig and
  would turn a calibration change into silently wrong voxels.
* **Temporal warp** (``grid_sample`` on a 5D volume: ONNX has it only from opset 20 and TensorRT's
  GridSample is 4D) is restated as :func:`graph.trilinear_sample_gather`: the 8 trilinear corners as
  row ``Gather``s from a (voxels, channels) table with ``align_corners=False`` / zero-padding
  weights, equal to ``F.grid_sample`` to float rounding. It costs ~50 ms of the tiny model's
  ~150 ms heads stage in onnxruntime on one CPU thread (``bench/bench_engines.py``).
* **Optional previous frame** (a Python ``if prev_volume is None`` in training code) becomes the
  input ``prev_valid`` (B,): 0 multiplies the warped volume and its mask away, which is exactly the
  model's first-frame path, so one graph serves the first and later frames.
* **MAE masking** is a training-only branch; the graph is traced in eval mode, so it is absent.
* **Dynamic batch**: dimension 0 of every input and output is the symbolic ``batch`` (traced with an
  example batch of 2, because ``torch.export`` specialises sizes 0 and 1). Camera count, image size
  and grid stay static: they are fixed by the checkpoint's :class:`ModelConfig`, which is stored in
  the file's metadata (``mv4d.model_config``) so engines need nothing but the ``.onnx`` file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger("mv4d.export")

#: Smallest opset the dynamo exporter can produce (and the one mv4d ships).
MIN_OPSET = 18
DEFAULT_OPSET = 18
#: Bumped when the graph's inputs/outputs change meaning; engines refuse files of another version.
FORMAT_VERSION = 1
META_PREFIX = "mv4d."


class ExportError(RuntimeError):
    """The model cannot be exported or the exported file is not valid; names the cause."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote: file path, size, opset, names, and the seconds it took."""

    path: Path
    size_bytes: int
    opset: int
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_batch: bool
    seconds: float


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


def export_onnx(model, path: str | Path, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
                source: str = "", verbose: bool = False) -> ExportResult:
    """Export ``model`` (an ``MV4DModel``) to the single file ``path`` and validate it.

    ``source`` is recorded in the metadata (e.g. the checkpoint file name). Raises
    :class:`ExportError` for an unsupported opset or when the result fails ``onnx.checker``.
    """
    import onnx
    import torch

    from mv4d_core.export.graph import InferenceGraph, example_inputs

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is not supported: the dynamo exporter produces opset >= {MIN_OPSET}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ExportError(f"output path {path} must end with .onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = InferenceGraph(model)
    cfg = graph.cfg
    # Batch 2: torch.export specialises a traced dimension of size 1, which would pin the batch.
    example = example_inputs(cfg, batch=2 if dynamic_batch else 1, temporal_prev=True)
    names_in, names_out = graph.input_names, graph.output_names
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=1024)
        dynamic_shapes = {n: {0: batch} for n in names_in}
    t0 = time.perf_counter()
    LOG.info("exporting %s model to %s (opset %d, dynamic batch %s)", cfg.name, path, opset, dynamic_batch)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # exporter-internal deprecation chatter (pytree LeafSpec, Dim renaming): nothing to act on
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
            torch.onnx.export(graph, example, str(path), dynamo=True, external_data=False, opset_version=opset,
                              input_names=list(names_in), output_names=list(names_out),
                              dynamic_shapes=dynamic_shapes, verbose=verbose)
    except Exception as e:  # noqa: BLE001 - the exporter raises many types; keep the cause visible
        raise ExportError(f"torch.onnx.export failed for the {cfg.name} model: {type(e).__name__}: {e}") from e
    proto = onnx.load(str(path))
    meta = {
        "model_config": json.dumps(cfg.to_dict()),
        "inputs": json.dumps(list(names_in)),
        "outputs": json.dumps(list(names_out)),
        "temporal": json.dumps(graph.temporal),
        "dynamic_batch": json.dumps(dynamic_batch),
        "format_version": str(FORMAT_VERSION),
        "source": source,
        "torch_version": torch.__version__,
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, value
    proto.producer_name = "mv4d"
    onnx.save_model(proto, str(path), save_as_external_data=False)
    validate_onnx(path, min_opset=opset)
    seconds = time.perf_counter() - t0
    LOG.info("wrote %s (%.1f MB) in %.1f s", path, path.stat().st_size / 1e6, seconds)
    return ExportResult(path, path.stat().st_size, opset, names_in, names_out, dynamic_batch, seconds)


def onnx_opset(proto) -> int:
    """Opset of the default ONNX domain."""
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ExportError("the ONNX file imports no default-domain opset")


def validate_onnx(path: str | Path, min_opset: int = MIN_OPSET) -> None:
    """``onnx.checker`` (full check), single-file (no external data), opset >= ``min_opset``."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file {path} does not exist")
    proto = _load_proto(path)
    external = [t.name for t in proto.graph.initializer if uses_external_data(t)]
    if external:
        raise ExportError(f"{path} keeps {len(external)} tensors in external data (e.g. {external[0]!r}); "
                          "mv4d ships single-file models")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{path} fails onnx.checker: {e}") from None
    opset = onnx_opset(proto)
    if opset < min_opset:
        raise ExportError(f"{path} has opset {opset} < {min_opset}")


def read_model_info(path: str | Path) -> OnnxModelInfo:
    """The mv4d metadata of ``path``; raises :class:`ExportError` for files not written by
    :func:`export_onnx` (or by an incompatible mv4d version)."""
    from mv4d_core.models import ModelConfig

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file {path} does not exist")
    proto = _load_proto(path)
    meta = {p.key[len(META_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(META_PREFIX)}
    if "model_config" not in meta:
        raise ExportError(f"{path} has no mv4d metadata (export it with `mv4d export`)")
    version = int(meta.get("format_version", "0"))
    if version != FORMAT_VERSION:
        raise ExportError(f"{path} has mv4d format_version {version}; this mv4d reads {FORMAT_VERSION} "
                          "(re-export it with `mv4d export`)")
    return OnnxModelInfo(
        model_config=ModelConfig.from_dict(json.loads(meta["model_config"])),
        input_names=tuple(json.loads(meta["inputs"])), output_names=tuple(json.loads(meta["outputs"])),
        temporal=bool(json.loads(meta["temporal"])), dynamic_batch=bool(json.loads(meta["dynamic_batch"])),
        opset=onnx_opset(proto), format_version=version, source=meta.get("source", ""))


def _load_proto(path: Path):
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and friends for non-ONNX bytes
        raise ExportError(f"{path} is not a readable ONNX file ({type(e).__name__}: {e})") from None


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
