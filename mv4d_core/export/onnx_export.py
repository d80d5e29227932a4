"""Export the mv4d model to one self-contained ONNX file (torch dynamo exporter, opset 18).

What is exported: ``MV4DModel.forward`` itself, through :class:`mv4d_core.export.wrapper.ExportWrapper`
(positional tensors in, a tuple out): camera images + intrinsics + extrinsics (+ previous volume,
ego motion and ``prev_valid`` when the model is temporal) to occupancy probability, flow,
per-camera depth and the state volume for the next frame. Names are
:func:`mv4d_core.engines.arrays.input_names` / ``output_names`` and are stored in the file.

Decisions (each checked in ``test/test_export.py``):

* **Exporter and format.** ``torch.onnx.export(..., dynamo=True, external_data=False)``: the dynamo
  exporter is the supported one in torch 2.13; ``external_data=False`` keeps the weights inside the
  ``.onnx`` file (dynamo writes ``.onnx.data`` otherwise) so one file is the deployable artefact.
  Opset 18: the dynamo exporter does not produce a lower opset, and TensorRT 10 parses opsets 9-20;
  requesting an opset < 18 is refused with an error.
* **LSS voxel pooling** (``models.lift.voxel_pool``) scatters every frustum point with one
  ``ScatterND(reduction="add")``, outside points into a dump row, so shapes depend on the config
  only. Not verified here (no TensorRT on the development machines): that a given TensorRT's parser
  accepts ScatterND's ``reduction`` attribute (opset 16+). The frustum -> voxel index is computed
  *inside* the graph from the ``intrinsics``/``T_base_cam`` inputs, so one exported file serves any
  rig calibration and the ROS node can take extrinsics from /tf_static at run time.
* **Temporal warp**: ``grid_sample`` on a 5D volume exists in ONNX only from opset 20 and TensorRT's
  GridSample is 4D, so while exporting the model samples the previous volume with 8 row gathers
  (``models.temporal.trilinear_sample_gather``, equal to ``F.grid_sample`` to float rounding).
* **Optional previous frame** is the input ``prev_valid`` (B,): 0 multiplies the warped volume and
  its mask away, so one graph serves the first and later frames.
* **MAE masking** is a training-only branch; the graph is traced in eval mode, so it is absent.
* **Dynamic batch and cameras**: dimension 0 of every input and output is the symbolic ``batch``
  (traced with an example batch of 2, because ``torch.export`` specialises sizes 0 and 1), and the
  camera axis of the per-camera inputs and outputs is the symbolic ``cameras``: one file runs on any
  rig. Image size and grid stay static: they are fixed by the checkpoint's :class:`ModelConfig`,
  which is stored in the file's metadata (``mv4d.model_config``) so engines need nothing but the
  ``.onnx`` file.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from mv4d_core.engines.base import EngineError
from mv4d_core.engines.onnx_format import FORMAT_VERSION, META_PREFIX, OnnxModelInfo, load_proto, onnx_opset

LOG = logging.getLogger("mv4d.export")

#: Smallest opset the dynamo exporter can produce (and the one mv4d ships).
MIN_OPSET = 18
DEFAULT_OPSET = 18


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


def export_onnx(model, path: str | Path, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
                source: str = "", verbose: bool = False) -> ExportResult:
    """Export ``model`` (an ``MV4DModel``) to the single file ``path`` and validate it.

    ``source`` is recorded in the metadata (e.g. the checkpoint file name). Raises
    :class:`ExportError` for an unsupported opset or when the result fails ``onnx.checker``.
    """
    import onnx
    import torch

    from mv4d_core.export.wrapper import ExportWrapper, example_inputs

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is not supported: the dynamo exporter produces opset >= {MIN_OPSET}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ExportError(f"output path {path} must end with .onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = ExportWrapper(model)
    cfg = graph.cfg
    # Batch 2: torch.export specialises a traced dimension of size 1, which would pin the batch.
    example = example_inputs(cfg, batch=2 if dynamic_batch else 1, temporal_prev=True)
    names_in, names_out = graph.input_names, graph.output_names
    # Cameras are data: the camera axis is always symbolic (any rig, one file); the batch when asked.
    batch = torch.export.Dim("batch", min=1, max=1024) if dynamic_batch else None
    cameras = torch.export.Dim("cameras", min=1, max=16)
    per_camera = {"images", "intrinsics", "T_base_cam", "lidar_depth"}
    dynamic_shapes = {"images": {}, "intrinsics": {}, "T_base_cam": {}, "rest": []}
    for n in names_in:
        dims = {0: batch} if batch is not None else {}
        if n in per_camera:
            dims[1] = cameras
        if n in ("images", "intrinsics", "T_base_cam"):
            dynamic_shapes[n] = dims
        else:
            dynamic_shapes["rest"].append(dims)
    dynamic_shapes["rest"] = tuple(dynamic_shapes["rest"])
    if not dynamic_shapes["rest"]:              # no varargs passed: torch.export wants only the named ones
        del dynamic_shapes["rest"]
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
        "temporal": json.dumps(bool(cfg.temporal)),
        "lidar": json.dumps(bool(cfg.lidar.enabled)),
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


def validate_onnx(path: str | Path, min_opset: int = MIN_OPSET) -> None:
    """``onnx.checker`` (full check), single-file (no external data), opset >= ``min_opset``."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file {path} does not exist")
    proto = _proto(path)
    external = [t.name for t in proto.graph.initializer if uses_external_data(t)]
    if external:
        raise ExportError(f"{path} keeps {len(external)} tensors in external data (e.g. {external[0]!r}); "
                          "mv4d ships single-file models")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{path} fails onnx.checker: {e}") from None
    opset = _opset(proto)
    if opset < min_opset:
        raise ExportError(f"{path} has opset {opset} < {min_opset}")


def _proto(path: Path):
    try:
        return load_proto(path)
    except EngineError as e:
        raise ExportError(str(e)) from None


def _opset(proto) -> int:
    try:
        return onnx_opset(proto)
    except EngineError as e:
        raise ExportError(str(e)) from None


__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "ExportError", "ExportResult", "OnnxModelInfo", "export_onnx", "validate_onnx"]
