"""ONNX export of ``MV4DModel.forward`` and the onnxruntime engine.

The model is exported ONCE per session (module fixture ``exported``, through ``mv4d export`` on a
trainer-style checkpoint); every parity test runs against that file. The model is the tiny config
with weights randomised with a fixed seed so that no head is at its zero initialisation (the
temporal fuse conv, for example, starts by ignoring the previous volume, which would hide warp
errors).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import onnxscript  # noqa: F401 - the dynamo exporter needs it; a missing install must fail, not skip
import pytest
import torch
import torch.nn.functional as F

from mv4d_core.engines import EngineError, EngineInputs, create_engine, default_checkpoint
from mv4d_core.engines.onnx_format import read_model_info
from mv4d_core.engines.onnxruntime_engine import OnnxRuntimeEngine
from mv4d_core.engines.torch_engine import TorchEngine
from mv4d_core.export.onnx_export import ExportError, export_onnx, validate_onnx
from mv4d_core.export.wrapper import ExportWrapper, example_inputs
from mv4d_core.geometry.voxel_grid import VoxelGridSpec
from mv4d_core.models import ModelConfig, ModelInputs, build_model
from mv4d_core.models.temporal import trilinear_sample_gather
from builders import randomised_model

# float32 graphs reordered by the exporter's optimiser: a few 1e-6 relative is expected. The largest
# difference seen is 4e-5 absolute, 14 % of this tolerance.
ATOL, RTOL = 2e-4, 1e-4


_randomised_model = randomised_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, ModelConfig, onnx path): a checkpoint exported with ``mv4d export``."""
    from mv4d_core.cli import main
    from mv4d_core.training.checkpoint import save_atomic

    cfg = ModelConfig.tiny()
    model = _randomised_model(cfg)
    folder = tmp_path_factory.mktemp("export")
    save_atomic({"model_config": cfg.to_dict(), "model": model.state_dict()}, folder / "model.pt")
    path = folder / "mv4d_tiny.onnx"
    assert main(["export", "--checkpoint", str(folder / "model.pt"), "--onnx", str(path)]) == 0
    return model, cfg, path


@pytest.fixture(scope="module")
def session(exported):
    return ort.InferenceSession(str(exported[2]), providers=["CPUExecutionProvider"])


def _feeds(names, tensors):
    return {n: t.numpy() for n, t in zip(names, tensors)}


def _assert_close(name, got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    err = np.abs(got - want) - (ATOL + RTOL * np.abs(want))
    assert err.max() <= 0, f"{name}: max abs diff {np.abs(got - want).max():.3g} exceeds tolerance"


# ----------------------------------------------------------------------------- the export-friendly ops
def test_trilinear_gather_equals_grid_sample_including_outside_points():
    gen = torch.Generator().manual_seed(3)
    volume = torch.rand(2, 3, 5, 6, 7, generator=gen)
    coords = torch.rand(2, 4, 3, 5, 3, generator=gen) * 2.8 - 1.4   # ~1/3 of the samples leave the volume
    coords[0, 0, 0, 0] = torch.tensor([1.0, -1.0, 1.0])              # exactly on the outer faces
    want = F.grid_sample(volume, coords, mode="bilinear", padding_mode="zeros", align_corners=False)
    got = trilinear_sample_gather(volume, coords)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-6)
    assert (want == 0).any(), "the test should include samples entirely outside the volume"


def test_voxel_pool_sums_inside_points_and_drops_outside_and_nonfinite_ones():
    from mv4d_core.models.lift import voxel_pool

    grid = VoxelGridSpec((-2.0, -2.0, -1.0), (2.0, 2.0, 1.0), (0.5, 0.5, 0.5))
    gen = torch.Generator().manual_seed(4)
    pts = torch.rand(2, 500, 3, generator=gen) * 6.0 - 3.0          # about 70 % outside the grid
    pts[0, :3] = float("nan")
    pts[1, 0] = float("inf")
    vals = torch.rand(2, 500, 4, generator=gen)
    got = voxel_pool(vals, pts, grid)
    assert got.shape == (2, 4) + grid.shape
    # an independent statement: each finite inside point adds its values to voxel floor((p - min) / size)
    want = torch.zeros(2, 4, *grid.shape)
    for b in range(2):
        for p, v in zip(pts[b], vals[b]):
            if torch.isfinite(p).all() and (p.abs() < torch.tensor([2.0, 2.0, 1.0])).all():
                i, j, k = ((p - torch.tensor(grid.range_min)) / 0.5).floor().long().tolist()
                want[b, :, i, j, k] += v
    assert torch.allclose(got, want, atol=1e-5)


def test_export_wrapper_is_the_model_forward_with_and_without_previous_frame():
    grid = VoxelGridSpec((-20.0, -20.0, -1.0), (20.0, 20.0, 5.4), (0.8, 0.8, 0.8))   # a quarter of TINY: fast
    cfg = ModelConfig.tiny().replace(num_cameras=2, grid=grid)
    model = _randomised_model(cfg, seed=5)
    wrapper = ExportWrapper(model)
    assert wrapper.output_names == ("occupancy_prob", "flow_mps", "motion_prob", "depth_m", "state_volume")
    with torch.no_grad():
        for with_prev in (False, True):
            ex = example_inputs(cfg, batch=1, seed=6, temporal_prev=with_prev)
            prev = (ex[3], ex[4], ex[5]) if with_prev else (None, None, None)
            ref = model(ModelInputs(ex[0], ex[1], ex[2], *prev))
            for name, value in zip(wrapper.output_names, wrapper(*ex)):
                assert torch.equal(value, getattr(ref, name)), (name, with_prev)


# ----------------------------------------------------------------------------- the file
@pytest.mark.slow  # shares the ~15 s export of the module fixture
def test_exported_file_is_single_valid_opset18_with_metadata(exported):
    model, cfg, path = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(path.name)] == [path.name], \
        "the export must not write external data next to the .onnx"
    from onnx.external_data_helper import uses_external_data
    assert not any(uses_external_data(t) for t in proto.graph.initializer)
    assert max(i.version for i in proto.opset_import if i.domain in ("", "ai.onnx")) >= 18
    info = read_model_info(path)
    assert info.model_config == cfg and info.temporal and info.dynamic_batch
    assert info.source == "model.pt"
    assert [i.name for i in proto.graph.input] == list(info.input_names) == \
        ["images", "intrinsics", "T_base_cam", "prev_volume", "T_prev_cur", "prev_valid"]
    assert [o.name for o in proto.graph.output] == list(info.output_names) == \
        ["occupancy_prob", "flow_mps", "motion_prob", "depth_m", "state_volume"]
    assert all(i.type.tensor_type.shape.dim[0].dim_param for i in proto.graph.input), "batch must be symbolic"
    ops = {n.op_type for n in proto.graph.node}
    assert "GridSample" not in ops, "5D grid_sample must be replaced by gathers at opset 18"
    # static shapes and ops TensorRT's ONNX parser has handled since 8.x (IsInf was not among them)
    assert not ops & {"NonZero", "Compress", "If", "Loop", "IsInf", "ReduceMin"}, ops
    assert "ScatterND" in ops or "ScatterElements" in ops, "voxel pooling should be one scatter-add"


@pytest.mark.slow  # shares the ~15 s export of the module fixture
def test_onnxruntime_matches_torch_first_frame(exported, session):
    model, cfg, path = exported
    ex = example_inputs(cfg, batch=1, seed=11, temporal_prev=False)
    with torch.no_grad():
        ref = model(ModelInputs(ex[0], ex[1], ex[2]))
    raw = session.run(None, _feeds(ExportWrapper(model).input_names, ex))
    got = dict(zip(read_model_info(path).output_names, raw))
    for name, value in got.items():
        _assert_close(name, value, getattr(ref, name).numpy())
    # ...and the published occupancy decision agrees except for voxels within tolerance of the threshold.
    p_ref = ref.occupancy_prob.numpy()
    flipped = (got["occupancy_prob"] >= 0.5) != (p_ref >= 0.5)
    assert not (flipped & (np.abs(p_ref - 0.5) > 1e-4)).any()


@pytest.mark.slow  # shares the ~15 s export of the module fixture
def test_onnxruntime_batch_mixes_first_and_later_frames(exported, session):
    """One batch, two kinds of sample: sample 0 fuses a previous volume (after a 1 m / 0.3 m ego move),
    sample 1 is a first frame; each equals its own torch run. (Batch 1 in the test above already runs
    a file traced at batch 2, i.e. the batch is really dynamic.)"""
    model, cfg, path = exported
    ex = list(example_inputs(cfg, batch=2, seed=12, temporal_prev=True))
    ex[5] = torch.tensor([1.0, 0.0])
    got = session.run(None, _feeds(ExportWrapper(model).input_names, ex))
    names = read_model_info(path).output_names
    for b in range(2):
        prev = ex[5][b] > 0
        mi = ModelInputs(ex[0][b:b + 1], ex[1][b:b + 1], ex[2][b:b + 1],
                         *((ex[3][b:b + 1], ex[4][b:b + 1], ex[5][b:b + 1]) if prev else (None, None, None)))
        with torch.no_grad():
            ref = model(mi)
        for name, value in zip(names, got):
            _assert_close(f"{name}[{b}]", value[b:b + 1], getattr(ref, name).numpy())
    # the previous volume really changes the result (the fuse conv is not at its pass-through init)
    with torch.no_grad():
        first_frame = model(ModelInputs(ex[0][:1], ex[1][:1], ex[2][:1])).occupancy_prob.numpy()
    assert np.abs(got[0][0] - first_frame).max() > 1e-3


def test_export_refuses_opset_below_18_and_non_onnx_paths(tmp_path):
    model = build_model(ModelConfig.tiny().replace(num_cameras=2))
    with pytest.raises(ExportError, match="opset 17"):
        export_onnx(model, tmp_path / "m.onnx", opset=17)
    with pytest.raises(ExportError, match=r"\.onnx"):
        export_onnx(model, tmp_path / "m.bin")


def test_foreign_onnx_file_is_refused_with_a_clear_error(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    proto = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(proto, tmp_path / "foreign.onnx")
    validate_onnx(tmp_path / "foreign.onnx")
    with pytest.raises(EngineError, match="no mv4d metadata") as err:
        read_model_info(tmp_path / "foreign.onnx")
    assert err.value.parameter == "checkpoint"
    with pytest.raises(EngineError, match="does not exist"):
        read_model_info(tmp_path / "missing.onnx")
    with pytest.raises(ExportError, match="opset 18 < 19"):
        validate_onnx(tmp_path / "foreign.onnx", min_opset=19)


# ----------------------------------------------------------------------------- engines + pipeline
def _frames(cfg, n=3, seed=21):
    """Frames at the model size (no resize) driving forward 1 m per 0.1 s with a small yaw."""
    from mv4d_core.data.frame import FrameRecord
    from mv4d_core.geometry.rig import NUSCENES_CAMERAS
    from mv4d_core.geometry.transforms import yaw_transform

    _, K, T, *_ = example_inputs(cfg, batch=1, seed=seed)
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        images = rng.integers(0, 256, (cfg.num_cameras, cfg.image_height, cfg.image_width, 3), dtype=np.uint8)
        frames.append(FrameRecord(1_000_000_000 + i * 100_000_000, list(NUSCENES_CAMERAS[:cfg.num_cameras]), images,
                                  K[0].numpy(), T[0].numpy(), yaw_transform(0.02 * i, (1.0 * i, 0.1 * i, 0.0))))
    return frames


@pytest.mark.slow  # shares the ~15 s export of the module fixture
def test_pipeline_with_onnxruntime_engine_equals_torch_engine(exported):
    from mv4d_core.pipeline.config import PerceptionConfig
    from mv4d_core.pipeline.pipeline import PerceptionPipeline

    model, cfg, path = exported
    onnx_engine = create_engine("onnxruntime", str(path), "cpu")
    torch_engine = TorchEngine(model, cfg)
    fields = ("image_hw", "grid", "depth_stride", "num_cameras")
    assert [getattr(onnx_engine.spec, f) for f in fields] == [getattr(torch_engine.spec, f) for f in fields]
    config = PerceptionConfig()
    pipes = {"torch": PerceptionPipeline(torch_engine, config),
             "onnxruntime": PerceptionPipeline(onnx_engine, config)}
    for frame in _frames(cfg, n=2):                                  # frame 2 uses the temporal state
        a, b = (pipes[k].process(frame) for k in ("torch", "onnxruntime"))
        _assert_close("occupancy_prob", b.occupancy_prob, a.occupancy_prob)
        _assert_close("flow_mps", b.flow_mps, a.flow_mps)
        _assert_close("depth_m", b.depth_m, a.depth_m)
        near = np.abs(a.occupancy_prob - config.occupancy_threshold) <= 1e-4
        assert np.array_equal(a.occupied | near, b.occupied | near)
        assert a.points_xyz.shape == b.points_xyz.shape and a.points_xyz.shape[0] > 0
        _assert_close("points_xyz", b.points_xyz, a.points_xyz)
        assert np.array_equal(a.points_rgb, b.points_rgb) and np.array_equal(a.points_camera, b.points_camera)
        assert (a.stamp_ns, a.frame_id, a.camera_names) == (b.stamp_ns, b.frame_id, b.camera_names)
    assert pipes["onnxruntime"].stats.frames == 2 and not pipes["onnxruntime"].stats.resets


@pytest.mark.slow  # shares the ~15 s export of the module fixture
def test_onnxruntime_engine_reset_forgets_the_previous_volume(exported):
    model, cfg, path = exported
    engine = OnnxRuntimeEngine(path)
    ex = example_inputs(cfg, batch=1, seed=31)
    first = EngineInputs(ex[0][0].numpy(), ex[1][0].numpy(), ex[2][0].numpy())
    later = EngineInputs(ex[0][0].numpy(), ex[1][0].numpy(), ex[2][0].numpy(), np.eye(4, dtype=np.float32))
    a = engine.infer(first).occupancy_prob
    b = engine.infer(later).occupancy_prob      # same images, fused with the state of the first call
    engine.reset()
    c = engine.infer(later).occupancy_prob      # no state after the reset: a first frame again
    assert np.abs(a - b).max() > 1e-4
    assert np.allclose(a, c, atol=1e-6)


@pytest.mark.slow  # shares the ~15 s export of the module fixture
def test_create_engine_errors_for_exported_engines_name_the_parameter(exported, tmp_path):
    cases = [("checkpoint", "mv4d export", str(tmp_path / "model.pt"), "cpu"),
             ("checkpoint", "does not exist", str(tmp_path / "nope.onnx"), "cpu")]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        cases.append(("device", "onnxruntime-gpu", str(exported[2]), "cuda"))
    for parameter, text, checkpoint, device in cases:
        with pytest.raises(EngineError, match=text) as err:
            create_engine("onnxruntime", checkpoint, device)
        assert err.value.parameter == parameter


def test_cli_export_without_checkpoint_or_default_fails_clearly(tmp_path, capsys):
    from mv4d_core.cli import main

    if default_checkpoint() is not None:
        pytest.skip("default weights are shipped: the empty checkpoint is valid")
    assert main(["export", "--onnx", str(tmp_path / "m.onnx")]) == 1
    assert "--checkpoint is empty and no default weights" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_non_onnx_bytes_are_refused_naming_the_file(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xffnot a protobuf")
    with pytest.raises(EngineError, match="not a readable ONNX file"):
        read_model_info(tmp_path / "junk.onnx")
    with pytest.raises(ExportError, match="not a readable ONNX file"):
        validate_onnx(tmp_path / "junk.onnx")


def test_cli_config_must_agree_with_the_checkpoint(tmp_path, capsys):
    from mv4d_core.cli import main
    from mv4d_core.training.checkpoint import save_atomic

    cfg = ModelConfig.tiny()
    model = build_model(cfg)
    save_atomic({"model_config": cfg.to_dict(), "model": model.state_dict()}, tmp_path / "with_cfg.pt")
    save_atomic(model.state_dict(), tmp_path / "bare.pt")
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(tmp_path / "with_cfg.pt"), "--config", "base", "--onnx", str(out)]) == 1
    assert "differs from the model config stored" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(tmp_path / "bare.pt"), "--config", "base", "--onnx", str(out)]) == 1
    assert "does not fit --config base" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--onnx", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow  # a second (smaller) export, ~10 s
def test_static_batch_export_of_a_model_without_temporal_fusion(tmp_path):
    grid = VoxelGridSpec((-20.0, -20.0, -1.0), (20.0, 20.0, 5.4), (0.8, 0.8, 0.8))
    cfg = ModelConfig.tiny().replace(num_cameras=2, grid=grid, temporal=False)
    model = _randomised_model(cfg, seed=8)
    res = export_onnx(model, tmp_path / "static.onnx", dynamic_batch=False)
    assert res.input_names == ("images", "intrinsics", "T_base_cam")
    proto = onnx.load(str(res.path))
    assert all(i.type.tensor_type.shape.dim[0].dim_value == 1 for i in proto.graph.input)
    info = read_model_info(res.path)
    assert not info.temporal and not info.dynamic_batch
    ex = example_inputs(cfg, batch=1, seed=9)
    inputs = EngineInputs(ex[0][0].numpy(), ex[1][0].numpy(), ex[2][0].numpy(), np.eye(4, dtype=np.float32))
    engines = (TorchEngine(model, cfg), OnnxRuntimeEngine(res.path))
    for _ in range(2):  # the second call has T_prev_cur but nothing to fuse: same result
        a, b = (e.infer(inputs) for e in engines)
        assert not a.fused_previous and not b.fused_previous
        _assert_close("occupancy_prob", b.occupancy_prob, a.occupancy_prob)
        _assert_close("depth_m", b.depth_m, a.depth_m)
        _assert_close("flow_mps", b.flow_mps, a.flow_mps)


def _leaves(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)):
            out[prefix + k] = float(v)
    return out


@pytest.mark.slow  # shares the ~15 s export of the module fixture
def test_mv4d_eval_scores_torch_and_onnxruntime_alike(exported, tmp_path):
    """`mv4d eval` runs the pipeline over either engine: every metric of the two runs agrees within 1e-3
    (the engines differ by float reordering only; a threshold flip moves IoU by ~1e-5 per voxel)."""
    import json

    from mv4d_core.cli import main

    _, _, onnx_path = exported
    runs = {}
    for engine, ckpt in (("torch", onnx_path.parent / "model.pt"), ("onnxruntime", onnx_path)):
        out = tmp_path / f"{engine}.json"
        assert main(["eval", "--engine", engine, "--checkpoint", str(ckpt), "--data", "synth:100:3",
                     "--json", str(out)]) == 0
        runs[engine] = json.loads(out.read_text())["results"]["model"]
    a, b = _leaves(runs["torch"]), _leaves(runs["onnxruntime"])
    assert set(a) == set(b) and {"depth/metric/abs_rel", "occupancy/iou", "flow/all/epe3d"} <= set(a)
    worst = max((abs(a[k] - b[k]) for k in a if np.isfinite(a[k])), default=0.0)
    assert worst <= 1e-3, worst
