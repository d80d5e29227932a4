"""onnxruntime engine: runs a file written by ``mv4d export`` behind the pipeline's :class:`Engine`.

Everything the engine needs (model config, input/output names, temporal or not) is read from the
file's metadata, so ``checkpoint`` is just the ``.onnx`` path. Providers: ``CPUExecutionProvider``
for ``device="cpu"``; ``CUDAExecutionProvider`` for ``cuda``/``cuda:N`` when the installed
onnxruntime has it (the ``onnxruntime-gpu`` wheel), otherwise an :class:`EngineError` says so.
Temporal state (the previous frame's ``state_volume``) is kept in numpy, exactly like
:class:`TorchEngine` keeps its tensor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mv4d_core.pipeline.engines import Engine, EngineError, EngineInputs, EngineOutputs, EngineSpec


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
                              "or use device 'cpu'")
        index = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise EngineError(f"unknown device {device!r} (cpu, cuda or cuda:N)")


class OnnxEngineBase(Engine):
    """Shared numpy plumbing of the exported-graph engines: feeds, state, output conversion.

    Subclasses implement :meth:`run_graph` (name -> array in, name -> array out)."""

    def __init__(self, info, name: str) -> None:
        cfg = info.model_config
        self.info = info
        self.model_config = cfg
        self.spec = EngineSpec(image_hw=(cfg.image_height, cfg.image_width), grid=cfg.grid,
                               depth_stride=cfg.depth_stride, num_cameras=cfg.num_cameras, name=name)
        self._state: np.ndarray | None = None

    def reset(self) -> None:
        self._state = None

    def run_graph(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def feeds(self, inputs: EngineInputs) -> dict[str, np.ndarray]:
        """Batch-of-1 graph inputs; the previous volume is fed only with ``T_prev_cur`` and a kept state."""
        def f32(a):
            return np.ascontiguousarray(a, dtype=np.float32)[None]

        feeds = {"images": f32(inputs.images), "intrinsics": f32(inputs.intrinsics),
                 "T_base_cam": f32(inputs.T_base_cam)}
        if self.info.temporal:
            cfg = self.model_config
            use_prev = inputs.T_prev_cur is not None and self._state is not None
            if use_prev:
                feeds["prev_volume"] = self._state
                feeds["T_prev_cur"] = f32(inputs.T_prev_cur)
            else:
                feeds["prev_volume"] = np.zeros((1, cfg.volume_channels) + cfg.grid.shape, np.float32)
                feeds["T_prev_cur"] = np.eye(4, dtype=np.float32)[None]
            feeds["prev_valid"] = np.array([1.0 if use_prev else 0.0], np.float32)
        return feeds

    def infer(self, inputs: EngineInputs) -> EngineOutputs:
        self.check_inputs(inputs)
        out = self.run_graph(self.feeds(inputs))
        self._state = np.ascontiguousarray(out["state_volume"], dtype=np.float32)
        return engine_outputs_from_arrays(out)


def engine_outputs_from_arrays(out: dict[str, np.ndarray]) -> EngineOutputs:
    """Graph outputs (batch of 1) -> :class:`EngineOutputs` (same conversion as ``TorchEngine``)."""
    labels = None
    if "semantic_logits" in out:
        labels = np.argmax(out["semantic_logits"][0], axis=0).astype(np.uint8)
    flow = np.ascontiguousarray(np.moveaxis(out["flow_mps"][0], 0, -1), dtype=np.float32)
    return EngineOutputs(occupancy_prob=np.asarray(out["occupancy_prob"][0], np.float32), labels=labels,
                         flow_mps=flow, depth_m=np.asarray(out["depth_m"][0], np.float32))


class OnnxRuntimeEngine(OnnxEngineBase):
    """``onnxruntime.InferenceSession`` over an exported mv4d ``.onnx`` file."""

    def __init__(self, path: str | Path, device: str = "cpu", intra_op_threads: int = 0, name: str = "") -> None:
        import onnxruntime as ort

        from mv4d_core.export.onnx_export import ExportError, read_model_info

        path = Path(path)
        try:
            info = read_model_info(path)
        except ExportError as e:
            raise EngineError(str(e)) from None
        super().__init__(info, name or f"onnxruntime:{path.name}")
        self.path = path
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=providers_for_device(device))
        missing = set(info.output_names) - {o.name for o in self.session.get_outputs()}
        if missing:
            raise EngineError(f"{path}: outputs {sorted(missing)} named in its metadata are not in the graph")

    def run_graph(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(self.info.output_names)
        return dict(zip(names, self.session.run(names, feeds)))
