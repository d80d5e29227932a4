"""Engines over a file written by ``mv4d export``: the shared graph plumbing and onnxruntime.

Everything an engine needs (model config, input/output names, temporal or not) is read from the
file's metadata, so ``checkpoint`` is just the ``.onnx`` path. onnxruntime providers:
``CPUExecutionProvider`` for ``device="cpu"``; ``CUDAExecutionProvider`` for ``cuda``/``cuda:N``
when the installed onnxruntime has it (the ``onnxruntime-gpu`` wheel), otherwise an
:class:`EngineError` says so. Temporal state (the previous frame's ``state_volume``) is kept in
numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mv4d_core.engines.arrays import engine_outputs, model_feeds
from mv4d_core.engines.base import Engine, EngineError, EngineInputs, EngineOutputs, EngineSpec
from mv4d_core.engines.onnx_format import read_model_info


def providers_for_device(device: str, available: list[str] | None = None) -> list:
    """onnxruntime providers for an mv4d ``device`` string (``cpu``, ``cuda``, ``cuda:N``)."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise EngineError(f"device {device!r} needs onnxruntime's CUDAExecutionProvider, which this onnxruntime "
                              f"does not have (available: {available}); install the 'onnxruntime-gpu' package "
                              "or use device 'cpu'", "device")
        index = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise EngineError(f"unknown device {device!r} (cpu, cuda or cuda:N)", "device")


class GraphEngine(Engine):
    """Shared plumbing of the exported-graph engines: named feeds, state, output conversion.

    Subclasses implement :meth:`run_graph` (name -> array in, name -> array out)."""

    def __init__(self, info, name: str) -> None:
        self.info = info
        self.model_config = info.model_config
        self.spec = EngineSpec.from_model_config(self.model_config, name)
        self._state: np.ndarray | None = None

    def reset(self) -> None:
        self._state = None

    def run_graph(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def infer(self, inputs: EngineInputs) -> EngineOutputs:
        self.check_inputs(inputs)
        feeds, fused = model_feeds(inputs, self._state, self.model_config)
        out = self.run_graph(feeds)
        self._state = np.ascontiguousarray(out["state_volume"], dtype=np.float32)
        return engine_outputs(out, fused)


class OnnxRuntimeEngine(GraphEngine):
    """``onnxruntime.InferenceSession`` over an exported mv4d ``.onnx`` file."""

    def __init__(self, path: str | Path, device: str = "cpu", intra_op_threads: int = 0, name: str = "") -> None:
        import onnxruntime as ort

        path = Path(path)
        info = read_model_info(path)
        super().__init__(info, name or f"onnxruntime:{path.name}")
        self.path = path
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=providers_for_device(device))
        missing = set(info.output_names) - {o.name for o in self.session.get_outputs()}
        if missing:
            raise EngineError(f"{path}: outputs {sorted(missing)} named in its metadata are not in the graph",
                              "checkpoint")

    def run_graph(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(self.info.output_names)
        return dict(zip(names, self.session.run(names, feeds)))
