"""TensorRT engine: builds a serialized engine from the exported ``.onnx`` file, caches it on disk,
and runs it behind the :class:`~mv4d_core.engines.base.Engine` interface.

TensorRT is optional (it is not installable from PyPI without NVIDIA's package index): nothing here
imports it at module level, availability is checked with
``importlib.util.find_spec("tensorrt")`` and a missing install is an :class:`EngineError` naming what
to install.

Engine cache (a serialized engine is only valid for the GPU model and TensorRT version that built it,
as TensorRT's developer guide states, so both are part of the key):

* The cache key is precision + TensorRT version + GPU name + SHA-256 of the ONNX file (+ the batch
  profile and this module's :data:`CACHE_FORMAT`). The engine file name carries precision, TensorRT
  version, a GPU slug and the key digest, e.g. ``mv4d_tiny.fp16.trt10.3.0.nvidia-a100.3f2c9a1b04de.engine``,
  with a ``.json`` sidecar holding the full key. Any change -> another file name -> a rebuild; a
  sidecar that does not match (hand-copied engine) or an engine TensorRT refuses to deserialize
  ("version tag does not match") also rebuilds.
* The cache lives in ``cache_dir`` (default: next to the ONNX file), never the system temp dir.
* Builds log their progress (TensorRT's ``IProgressMonitor`` where available), and
  :func:`build_engine` is the ``build_only`` mode: build (or find) the engine, write it, return.
* Files are written atomically (temp file + rename), so an interrupted build never leaves a
  truncated engine under the final name.

The TensorRT calls sit behind :class:`TrtBackend` so the key and the load/rebuild decisions are
unit-tested without TensorRT; :class:`TensorRTBackend` is the real one (TensorRT 10 API, CUDA
buffers from a CUDA-enabled torch).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from mv4d_core.engines.base import EngineError
from mv4d_core.engines.onnx_format import file_sha256, read_model_info
from mv4d_core.engines.onnxruntime_engine import GraphEngine
from mv4d_core.utils.atomic_write import write_bytes_atomic

LOG = logging.getLogger("mv4d.tensorrt")

PRECISIONS = ("fp32", "fp16")
#: Bump when the way engines are built changes (flags, profiles): old cache entries then rebuild.
CACHE_FORMAT = 1
INSTALL_HINT = ("engine 'tensorrt' needs NVIDIA TensorRT's Python package and a CUDA GPU: install TensorRT 10 "
                "(e.g. `pip install tensorrt-cu12` with NVIDIA's package index reachable, or the JetPack/TensorRT "
                "system packages) plus a CUDA-enabled torch; on CPU use engine 'onnxruntime'")


def tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def require_tensorrt() -> None:
    if not tensorrt_available():
        raise EngineError(f"TensorRT is not installed: {INSTALL_HINT}", "engine")


@dataclass(frozen=True)
class EngineCacheKey:
    """Everything a serialized TensorRT engine depends on."""

    model_sha256: str
    precision: str
    trt_version: str
    gpu_name: str
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1
    cache_format: int = CACHE_FORMAT

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EngineError(f"TensorRT precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise EngineError(f"TensorRT batch profile needs 1 <= min <= opt <= max, got "
                              f"{self.min_batch}/{self.opt_batch}/{self.max_batch}")

    def digest(self) -> str:
        """Hex SHA-256 over all fields (stable: sorted JSON)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def engine_filename(self, stem: str) -> str:
        return f"{stem}.{self.precision}.trt{self.trt_version}.{gpu_slug(self.gpu_name)}.{self.digest()[:12]}.engine"

    def to_dict(self) -> dict:
        return asdict(self)


def gpu_slug(name: str) -> str:
    """File-name-safe GPU name: ``"NVIDIA GeForce RTX 3090"`` -> ``"nvidia-geforce-rtx-3090"``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unknown-gpu"


@dataclass(frozen=True)
class CacheDecision:
    """``action`` is ``"load"`` (a valid cached engine exists) or ``"build"``; ``reason`` says why."""

    action: str
    engine_path: Path
    meta_path: Path
    reason: str


def _read_meta(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def decide(key: EngineCacheKey, cache_dir: str | Path, stem: str, force_rebuild: bool = False) -> CacheDecision:
    """Load or build? Pure file-system logic, no TensorRT.

    Build when forced, when the engine for ``key`` is missing or empty, or when its sidecar is missing
    or records another key. When other engines of ``stem`` exist, the reason names the key fields that
    changed (e.g. ``trt_version 10.0.1 -> 10.3.0``).
    """
    cache_dir = Path(cache_dir)
    engine_path = cache_dir / key.engine_filename(stem)
    meta_path = engine_path.with_suffix(".json")
    if force_rebuild:
        return CacheDecision("build", engine_path, meta_path, "rebuild forced")
    if not engine_path.is_file():
        changed = _changes_vs_cached(key, cache_dir, stem)
        reason = f"no cached engine for this key ({changed})" if changed else "no cached engine for this key"
        return CacheDecision("build", engine_path, meta_path, reason)
    if engine_path.stat().st_size == 0:
        return CacheDecision("build", engine_path, meta_path, "cached engine file is empty")
    meta = _read_meta(meta_path)
    if meta is None:
        return CacheDecision("build", engine_path, meta_path, "cached engine has no readable .json sidecar")
    if meta.get("key") != key.to_dict():
        diff = _key_diff(meta.get("key") or {}, key.to_dict())
        return CacheDecision("build", engine_path, meta_path, f"cached engine was built for another key ({diff})")
    return CacheDecision("load", engine_path, meta_path, "cache hit")


def _key_diff(old: dict, new: dict) -> str:
    parts = [f"{k} {old.get(k)} -> {v}" for k, v in new.items() if old.get(k) != v]
    return ", ".join(parts) if parts else "same key"


def _changes_vs_cached(key: EngineCacheKey, cache_dir: Path, stem: str) -> str:
    """Key differences against the newest cached engine of ``stem`` (empty when there is none)."""
    if not cache_dir.is_dir():
        return ""
    metas = sorted(cache_dir.glob(f"{glob_escape(stem)}.*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for m in metas:
        meta = _read_meta(m)
        if meta and isinstance(meta.get("key"), dict):
            return "cached engine differs in: " + _key_diff(meta["key"], key.to_dict())
    return ""


def glob_escape(text: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", text)


class TrtBackend(Protocol):
    """The TensorRT operations the cache needs (real: :class:`TensorRTBackend`)."""

    def version(self) -> str: ...

    def gpu_name(self) -> str: ...

    def build(self, onnx_path: Path, precision: str, key: EngineCacheKey, progress: Callable[[str], None]) -> bytes:
        """Serialized engine bytes; raise :class:`EngineError` on failure."""

    def deserialize(self, data: bytes):
        """A runner for the engine, or None when TensorRT rejects it (version tag mismatch, corrupt)."""


@dataclass
class PreparedEngine:
    """Result of :func:`prepare_engine`: the decision taken, whether a build ran, the runner (None in
    build-only mode) and the build time."""

    decision: CacheDecision
    built: bool
    runner: object | None
    build_seconds: float = 0.0


def cache_key_for(onnx_path: str | Path, precision: str, backend: TrtBackend, max_batch: int = 1) -> EngineCacheKey:
    return EngineCacheKey(model_sha256=file_sha256(onnx_path), precision=precision, trt_version=backend.version(),
                          gpu_name=backend.gpu_name(), min_batch=1, opt_batch=1, max_batch=max_batch)


def prepare_engine(onnx_path: str | Path, precision: str, backend: TrtBackend, cache_dir: str | Path | None = None,
                   force_rebuild: bool = False, build_only: bool = False, max_batch: int = 1,
                   log: Callable[[str], None] | None = None) -> PreparedEngine:
    """Find or build the engine of ``onnx_path`` for ``precision``; load it unless ``build_only``.

    A cached engine that TensorRT refuses to deserialize is rebuilt once.
    """
    log = log or LOG.info
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineError(f"ONNX file {onnx_path} does not exist (write it with `mv4d export`)")
    cache_dir = Path(cache_dir) if cache_dir else onnx_path.parent
    key = cache_key_for(onnx_path, precision, backend, max_batch)
    decision = decide(key, cache_dir, onnx_path.stem, force_rebuild)
    log(f"TensorRT engine {decision.engine_path.name}: {decision.action} ({decision.reason})")
    if decision.action == "load":
        if build_only:
            return PreparedEngine(decision, False, None)
        runner = backend.deserialize(decision.engine_path.read_bytes())
        if runner is not None:
            return PreparedEngine(decision, False, runner)
        decision = CacheDecision("build", decision.engine_path, decision.meta_path,
                                 "TensorRT refused the cached engine (version tag or corrupt file)")
        log(f"TensorRT engine {decision.engine_path.name}: build ({decision.reason})")
    t0 = time.perf_counter()
    log(f"building TensorRT {precision} engine from {onnx_path.name} (this can take minutes)")
    data = backend.build(onnx_path, precision, key, log)
    seconds = time.perf_counter() - t0
    write_bytes_atomic(decision.engine_path, data)
    meta = {"key": key.to_dict(), "onnx": onnx_path.name, "build_seconds": round(seconds, 3),
            "built_at_unix": int(time.time()), "engine_bytes": len(data)}
    write_bytes_atomic(decision.meta_path, json.dumps(meta, indent=2).encode())
    log(f"TensorRT engine written to {decision.engine_path} ({len(data) / 1e6:.1f} MB, {seconds:.1f} s)")
    runner = None if build_only else backend.deserialize(data)
    if runner is None and not build_only:
        raise EngineError(f"TensorRT could not deserialize the engine it just built ({decision.engine_path})")
    return PreparedEngine(decision, True, runner, seconds)


class TensorRTBackend:
    """TensorRT 10 Python API. Imported lazily; construct only where :func:`tensorrt_available`."""

    def __init__(self, device_index: int = 0, workspace_bytes: int = 1 << 30) -> None:
        require_tensorrt()
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise EngineError(f"TensorRT needs CUDA, but torch sees no CUDA device: {INSTALL_HINT}", "device")
        self.trt = trt
        self.torch = torch
        self.device_index = device_index
        self.workspace_bytes = workspace_bytes
        self.logger = trt.Logger(trt.Logger.WARNING)

    def version(self) -> str:
        return str(self.trt.__version__)

    def gpu_name(self) -> str:
        return str(self.torch.cuda.get_device_name(self.device_index))

    def build(self, onnx_path: Path, precision: str, key: EngineCacheKey, progress: Callable[[str], None]) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT cannot parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        if precision == "fp16":
            if not hasattr(trt.BuilderFlag, "FP16"):
                raise EngineError(f"this TensorRT ({trt.__version__}) has no FP16 builder flag; use precision fp32")
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = tuple(tensor.shape)
            if dims and dims[0] == -1:
                rest = dims[1:]
                profile.set_shape(tensor.name, (key.min_batch,) + rest, (key.opt_batch,) + rest,
                                  (key.max_batch,) + rest)
        config.add_optimization_profile(profile)
        monitor = _progress_monitor(trt, progress)
        if monitor is not None:
            config.progress_monitor = monitor
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
        return bytes(plan)

    def deserialize(self, data: bytes):
        runtime = self.trt.Runtime(self.logger)
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            return None
        return _TensorRTRunner(self.trt, self.torch, engine, self.device_index)


def _progress_monitor(trt, progress: Callable[[str], None]):
    """A TensorRT ``IProgressMonitor`` forwarding phase starts to ``progress`` (None if unsupported)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._last = 0.0

        def phase_start(self, phase_name, parent_phase, num_steps):
            progress(f"TensorRT build: {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            now = time.monotonic()
            if now - self._last > 10.0:  # a heartbeat, not a flood
                self._last = now
                progress(f"TensorRT build: {phase_name} step {step}")
            return True

        def phase_finish(self, phase_name):
            pass

    return _Monitor()


class _TensorRTRunner:
    """Execution context + CUDA buffers (torch tensors) for name -> numpy in/out calls."""

    def __init__(self, trt, torch, engine, device_index: int) -> None:
        self.trt, self.torch, self.engine = trt, torch, engine
        self.context = engine.create_execution_context()
        self.device = torch.device("cuda", device_index)
        self.stream = torch.cuda.Stream(self.device)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        keep = []
        for name in self.inputs:
            t = torch.from_numpy(np.ascontiguousarray(feeds[name], np.float32)).to(self.device)
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=torch.float32, device=self.device)
            self.context.set_tensor_address(name, outs[name].data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise EngineError("TensorRT execute_async_v3 failed")
        self.stream.synchronize()
        return {k: v.cpu().numpy() for k, v in outs.items()}


class TensorRTEngine(GraphEngine):
    """The exported graph run by TensorRT (FP32/FP16), engine cached by :func:`prepare_engine`."""

    def __init__(self, onnx_path: str | Path, precision: str = "fp32", device: str = "cuda",
                 cache_dir: str | Path | None = None, force_rebuild: bool = False,
                 backend: TrtBackend | None = None) -> None:
        if precision not in PRECISIONS:
            raise EngineError(f"TensorRT precision must be one of {PRECISIONS}, got {precision!r}")
        if not device.startswith("cuda"):
            raise EngineError(f"engine 'tensorrt' runs on a CUDA device, got device {device!r}", "device")
        onnx_path = Path(onnx_path)
        info = read_model_info(onnx_path)
        super().__init__(info, f"tensorrt-{precision}:{onnx_path.name}")
        index = int(device.split(":")[1]) if ":" in device else 0
        self.backend = backend or TensorRTBackend(index)
        self.prepared = prepare_engine(onnx_path, precision, self.backend, cache_dir, force_rebuild)
        self.runner = self.prepared.runner

    def run_graph(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner(feeds)


def build_engine(onnx_path: str | Path, precision: str = "fp16", cache_dir: str | Path | None = None,
                 force_rebuild: bool = False, device_index: int = 0,
                 backend: TrtBackend | None = None) -> PreparedEngine:
    """``build_only`` mode: make sure the cached engine for ``onnx_path`` exists, without running it."""
    backend = backend or TensorRTBackend(device_index)
    return prepare_engine(onnx_path, precision, backend, cache_dir, force_rebuild, build_only=True)
