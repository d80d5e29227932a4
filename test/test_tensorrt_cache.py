"""TensorRT engine cache: key, file naming and the load/rebuild decisions.

TensorRT itself is not installable on the development machines, so these tests exercise the cache
logic through a recording backend that stands in for the three TensorRT calls (version, GPU name,
build/deserialize); they check which call the cache makes and what it writes, never a TensorRT run.
The real engine runs only where TensorRT and CUDA exist (``gpu`` test at the end).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mv4d_core.engines.tensorrt_engine import (CACHE_FORMAT, EngineCacheKey, build_engine, decide, gpu_slug,
                                               prepare_engine, tensorrt_available)
from mv4d_core.engines import EngineError


class RecordingBackend:
    """Answers version/GPU as configured; ``build`` returns bytes naming the key; ``deserialize``
    returns a marker object unless the bytes are in ``reject``."""

    def __init__(self, version="10.3.0", gpu="NVIDIA A100-SXM4-40GB"):
        self._version, self._gpu = version, gpu
        self.builds: list[tuple[str, str]] = []
        self.loads: list[bytes] = []
        self.reject: set[bytes] = set()

    def version(self):
        return self._version

    def gpu_name(self):
        return self._gpu

    def build(self, onnx_path, precision, key, progress):
        progress("phase: building")
        self.builds.append((Path(onnx_path).name, precision))
        return f"engine:{key.digest()}".encode()

    def deserialize(self, data):
        self.loads.append(data)
        return None if data in self.reject else ("runner", data)


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "mv4d_tiny.onnx"
    path.write_bytes(b"pretend onnx bytes v1")
    return path


def _key(**changes):
    base = dict(model_sha256="a" * 64, precision="fp16", trt_version="10.3.0", gpu_name="NVIDIA A100")
    return EngineCacheKey(**{**base, **changes})


def test_key_digest_changes_with_every_field_and_is_stable():
    k = _key()
    assert k.digest() == _key().digest()
    variants = [_key(model_sha256="b" * 64), _key(precision="fp32"), _key(trt_version="10.4.0"),
                _key(gpu_name="NVIDIA H100"), _key(max_batch=4, opt_batch=2), _key(cache_format=CACHE_FORMAT + 1)]
    digests = {v.digest() for v in variants}
    assert len(digests) == len(variants) and k.digest() not in digests


def test_engine_filename_names_precision_version_gpu_and_digest():
    name = _key(gpu_name="NVIDIA GeForce RTX 3090").engine_filename("mv4d_tiny")
    assert name.startswith("mv4d_tiny.fp16.trt10.3.0.nvidia-geforce-rtx-3090.")
    assert name.endswith(".engine") and _key(gpu_name="NVIDIA GeForce RTX 3090").digest()[:12] in name
    assert gpu_slug("  Orin (nvgpu) ") == "orin-nvgpu" and gpu_slug("???") == "unknown-gpu"


def test_key_rejects_unknown_precision_and_bad_batch_profile():
    with pytest.raises(EngineError, match="precision"):
        _key(precision="int8")
    with pytest.raises(EngineError, match="batch profile"):
        _key(min_batch=2, opt_batch=1, max_batch=4)


def test_first_use_builds_then_second_use_loads_from_cache(onnx_file):
    backend = RecordingBackend()
    logs: list[str] = []
    first = prepare_engine(onnx_file, "fp16", backend, log=logs.append)
    assert first.built and first.decision.action == "build" and "no cached engine" in first.decision.reason
    assert backend.builds == [("mv4d_tiny.onnx", "fp16")]
    assert first.decision.engine_path.parent == onnx_file.parent, "default cache is next to the ONNX file"
    assert first.decision.engine_path.read_bytes() == backend.loads[0]
    meta = json.loads(first.decision.meta_path.read_text())
    assert meta["key"]["precision"] == "fp16" and meta["key"]["trt_version"] == "10.3.0"
    assert any("building TensorRT fp16 engine" in m for m in logs) and "phase: building" in logs
    second = prepare_engine(onnx_file, "fp16", backend)
    assert not second.built and second.decision.reason == "cache hit"
    assert len(backend.builds) == 1 and second.runner == ("runner", first.decision.engine_path.read_bytes())
    assert not list(onnx_file.parent.glob(".*.tmp")), "atomic writes leave no temp files"


@pytest.mark.parametrize("change,field", [
    ({"version": "10.4.0"}, "trt_version 10.3.0 -> 10.4.0"),
    ({"gpu": "NVIDIA H100 80GB HBM3"}, "gpu_name NVIDIA A100-SXM4-40GB -> NVIDIA H100 80GB HBM3"),
])
def test_new_tensorrt_version_or_gpu_rebuilds_and_says_what_changed(onnx_file, change, field):
    prepare_engine(onnx_file, "fp16", RecordingBackend())
    backend = RecordingBackend(**change)
    res = prepare_engine(onnx_file, "fp16", backend)
    assert res.built and backend.builds and field in res.decision.reason
    assert len(list(onnx_file.parent.glob("*.engine"))) == 2, "engines of other keys stay (another GPU may use them)"


def test_changed_onnx_file_or_precision_rebuilds(onnx_file):
    backend = RecordingBackend()
    prepare_engine(onnx_file, "fp16", backend)
    assert prepare_engine(onnx_file, "fp32", backend).built
    onnx_file.write_bytes(b"pretend onnx bytes v2 (re-exported)")
    res = prepare_engine(onnx_file, "fp16", backend)
    assert res.built and "model_sha256" in res.decision.reason
    assert len(backend.builds) == 3


def test_sidecar_mismatch_empty_engine_and_force_rebuild(onnx_file, tmp_path):
    backend = RecordingBackend()
    cache = tmp_path / "cache"
    first = prepare_engine(onnx_file, "fp32", backend, cache_dir=cache)
    assert first.decision.engine_path.parent == cache
    meta = json.loads(first.decision.meta_path.read_text())
    meta["key"]["trt_version"] = "8.6.1"                       # e.g. an engine copied in by hand
    first.decision.meta_path.write_text(json.dumps(meta))
    res = prepare_engine(onnx_file, "fp32", backend, cache_dir=cache)
    assert res.built and "another key" in res.decision.reason and "trt_version 8.6.1 -> 10.3.0" in res.decision.reason
    first.decision.meta_path.unlink()
    assert "sidecar" in decide(_key_for(onnx_file, backend), cache, onnx_file.stem).reason
    prepare_engine(onnx_file, "fp32", backend, cache_dir=cache)
    first.decision.engine_path.write_bytes(b"")
    assert decide(_key_for(onnx_file, backend), cache, onnx_file.stem).reason == "cached engine file is empty"
    prepare_engine(onnx_file, "fp32", backend, cache_dir=cache)
    n = len(backend.builds)
    assert prepare_engine(onnx_file, "fp32", backend, cache_dir=cache, force_rebuild=True).built
    assert len(backend.builds) == n + 1


def _key_for(onnx_file, backend):
    from mv4d_core.engines.tensorrt_engine import cache_key_for

    return cache_key_for(onnx_file, "fp32", backend)


def test_engine_tensorrt_refuses_is_rebuilt_once(onnx_file):
    backend = RecordingBackend()
    first = prepare_engine(onnx_file, "fp16", backend)
    backend.reject.add(first.decision.engine_path.read_bytes())   # "version tag does not match"
    first.decision.engine_path.write_bytes(first.decision.engine_path.read_bytes())
    backend.build = (lambda orig: (lambda *a: orig(*a) + b"-rebuilt"))(backend.build)
    res = prepare_engine(onnx_file, "fp16", backend)
    assert res.built and "refused" in res.decision.reason and res.runner is not None


def test_build_only_builds_without_loading_and_then_reports_the_cache_hit(onnx_file):
    backend = RecordingBackend()
    res = build_engine(onnx_file, "fp16", backend=backend)
    assert res.built and res.runner is None and backend.loads == []
    again = build_engine(onnx_file, "fp16", backend=backend)
    assert not again.built and again.decision.reason == "cache hit" and backend.loads == []


def test_missing_onnx_file_is_a_clear_error(tmp_path):
    with pytest.raises(EngineError, match="does not exist.*mv4d export"):
        prepare_engine(tmp_path / "none.onnx", "fp16", RecordingBackend())


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here")
def test_without_tensorrt_engine_and_cli_name_what_to_install(tmp_path, capsys):
    from mv4d_core.cli import main
    from mv4d_core.engines import create_engine

    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(EngineError, match="TensorRT is not installed.*tensorrt") as err:
        create_engine("tensorrt", str(tmp_path / "m.onnx"), "cuda")
    assert err.value.parameter == "engine"
    assert main(["export", "--onnx", str(tmp_path / "m.onnx"), "--tensorrt", "fp16", "--build-only"]) == 1
    err = capsys.readouterr().err
    assert "TensorRT is not installed" in err and "tensorrt-cu12" in err


@pytest.mark.gpu
@pytest.mark.skipif(not tensorrt_available(), reason="TensorRT is not installed (optional; it needs NVIDIA's package index)")
def test_real_tensorrt_engine_matches_onnxruntime(tmp_path):
    import numpy as np
    import torch

    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs CUDA")
    from mv4d_core.engines import EngineInputs
    from mv4d_core.engines.onnxruntime_engine import OnnxRuntimeEngine
    from mv4d_core.engines.tensorrt_engine import TensorRTEngine
    from mv4d_core.export.onnx_export import export_onnx
    from mv4d_core.export.wrapper import example_inputs
    from mv4d_core.models import ModelConfig, build_model

    cfg = ModelConfig.tiny()
    torch.manual_seed(0)
    path = export_onnx(build_model(cfg), tmp_path / "m.onnx").path
    ex = example_inputs(cfg, batch=1, seed=1)
    inputs = EngineInputs(ex[0][0].numpy(), ex[1][0].numpy(), ex[2][0].numpy())
    want = OnnxRuntimeEngine(path).infer(inputs)
    got = TensorRTEngine(path, "fp32").infer(inputs)
    assert np.abs(got.occupancy_prob - want.occupancy_prob).max() < 1e-3
    assert np.abs(got.depth_m - want.depth_m).max() < 1e-2
