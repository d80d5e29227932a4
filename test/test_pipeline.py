"""PerceptionPipeline: pre-processing (resize + K), engine call, post-processing, temporal resets.

Most tests drive the pipeline with a tiny deterministic engine defined here (a test double, not
product code): it "sees" a fixed box and reports back what it was given, so every step of the
pipeline can be checked exactly. One test runs the real (untrained) torch model end to end.
"""

from __future__ import annotations

import numpy as np
import pytest

from mv4d_core.data.frame import FrameRecord
from mv4d_core.geometry.camera import PinholeCamera
from mv4d_core.geometry.transforms import make_transform, yaw_transform
from mv4d_core.geometry.voxel_grid import VoxelGridSpec
from mv4d_core.engines import Engine, EngineError, EngineOutputs, EngineSpec, create_engine
from mv4d_core.engines.torch_engine import TorchEngine
from mv4d_core.pipeline.config import ConfigError, PerceptionConfig, PointsConfig
from mv4d_core.pipeline.pipeline import FrameError, LateFrame, PerceptionPipeline, output_arrays
from mv4d_core.pipeline.postprocess import OCCUPANCY_DTYPE, unpack_rgb

GRID = VoxelGridSpec((-8.0, -8.0, -1.0), (8.0, 8.0, 3.0), (1.0, 1.0, 1.0))   # (16, 16, 4)
CAMS = ["CAM_A", "CAM_B"]
R_OPT = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0.0]])  # optical -> body, camera looking along +x


class BoxEngine(Engine):
    """Deterministic double: occupancy 0.9 in one voxel block (moving +2 m/s in x), depth = 5 m
    everywhere; records every EngineInputs it receives and every reset."""

    def __init__(self, num_cameras: int | None = 2):
        self.spec = EngineSpec(image_hw=(16, 24), grid=GRID, depth_stride=4, num_cameras=num_cameras, name="box")
        self.calls = []
        self.resets = 0

    def reset(self):
        self.resets += 1

    def infer(self, inputs):
        self.check_inputs(inputs)
        self.calls.append(inputs)
        prob = np.full(GRID.shape, 0.1, np.float32)
        prob[10:12, 7:9, 1] = 0.9
        flow = np.zeros(GRID.shape + (3,), np.float32)
        flow[..., 0] = 2.0
        n = inputs.images.shape[0]
        return EngineOutputs(prob, flow, np.full((n, 4, 6), 5.0, np.float32), inputs.T_prev_cur is not None)


def make_frame(stamp_ns=1_000_000_000, names=CAMS, h=32, w=48, T_world_base=None, color=(200, 100, 50)):
    n = len(names)
    cam = PinholeCamera.from_fov(90.0, w, h)
    T = np.stack([make_transform(R_OPT, np.array([1.0, 0.0, 1.5])) for _ in range(n)])
    T[1] = yaw_transform(np.pi) @ T[1] if n > 1 else T[1]
    images = np.zeros((n, h, w, 3), np.uint8)
    images[:] = color
    images[:, :, : w // 2] = (10, 20, 30)
    return FrameRecord(stamp_ns, list(names), images, np.stack([cam.K] * n), T,
                       np.eye(4) if T_world_base is None else T_world_base)


def test_preprocess_resizes_images_and_scales_intrinsics():
    pipe = PerceptionPipeline(BoxEngine(), PerceptionConfig(camera_names=tuple(CAMS)))
    frame = make_frame()
    pipe.process(frame)
    inp = pipe.engine.calls[0]
    assert inp.images.shape == (2, 3, 16, 24) and inp.images.dtype == np.float32
    assert 0.0 <= inp.images.min() and inp.images.max() <= 1.0
    # Right half of the image was (200, 100, 50): it stays so after the area resize.
    np.testing.assert_allclose(inp.images[0, :, 8, 20], np.array([200, 100, 50]) / 255.0, atol=1 / 255)
    K = frame.intrinsics[0]
    np.testing.assert_allclose(inp.intrinsics[0, 0, 0], K[0, 0] * 0.5)
    np.testing.assert_allclose(inp.intrinsics[0, 0, 2], (K[0, 2] + 0.5) * 0.5 - 0.5)
    np.testing.assert_allclose(inp.T_base_cam, frame.T_base_cam.astype(np.float32))
    assert inp.T_prev_cur is None  # first frame: no temporal input


def test_outputs_carry_stamp_frame_occupancy_and_depth_points():
    cfg = PerceptionConfig(camera_names=tuple(CAMS), points=PointsConfig(stride=1))
    pipe = PerceptionPipeline(BoxEngine(), cfg)
    out = pipe.process(make_frame(stamp_ns=42))
    assert out.stamp_ns == 42 and out.frame_id == "base_link" and out.camera_names == CAMS
    assert out.occupied.sum() == 4 and out.occupancy_prob[out.occupied].min() == pytest.approx(0.9)
    assert out.depth_m.shape == (2, 4, 6)
    # Depth 5 m straight ahead of camera A (at x=1, looking +x): its points sit at x = 6 m.
    a = out.points_camera == 0
    np.testing.assert_allclose(out.points_xyz[a, 0], 6.0, atol=1e-4)
    b = out.points_camera == 1                      # camera B looks backwards
    np.testing.assert_allclose(out.points_xyz[b, 0], -6.0, atol=1e-4)
    assert len(out.points_xyz) == 2 * 4 * 6
    assert pipe.timings.total_ms > 0 and pipe.stats.frames == 1


def test_output_arrays_are_message_ready():
    cfg = PerceptionConfig(camera_names=tuple(CAMS))
    pipe = PerceptionPipeline(BoxEngine(), cfg)
    out = pipe.process(make_frame())
    arr = output_arrays(out, cfg, want={"occupancy", "points", "flow", "depth", "bev", "markers"})
    assert arr.occupancy.dtype == OCCUPANCY_DTYPE and len(arr.occupancy) == 4
    np.testing.assert_allclose(sorted(set(arr.occupancy["x"].tolist())), [2.5, 3.5])
    assert set(arr.flow["vx"].tolist()) == {2.0} and len(arr.flow) == 4
    assert set(arr.depth) == set(CAMS) and arr.depth["CAM_A"].dtype == np.float32
    assert arr.bev.data.max() == 90 and (arr.bev.data == 10).sum() == 16 * 16 - 4
    assert sum(len(c.points) for c in arr.markers) == 4
    cols = unpack_rgb(arr.points["rgb"])
    assert cols.dtype == np.uint8 and len(cols) == len(arr.points)
    # Only what was asked for is computed.
    only = output_arrays(out, cfg, want={"bev"})
    assert only.bev is not None and only.occupancy is None and only.points is None and only.depth is None


class GatedBoxEngine(BoxEngine):
    """BoxEngine with a motion gate: of its two occupied columns only y = 7 moves (probability 0.9)."""

    def infer(self, inputs):
        out = super().infer(inputs)
        motion = np.full(GRID.shape, 0.1, np.float32)
        motion[10:12, 7, 1] = 0.9
        out.flow_mps[motion < 0.5] = 0.0
        out.motion_prob = motion
        return out


def test_moving_output_holds_the_moving_occupied_voxels_with_velocity_and_arrows():
    cfg = PerceptionConfig(camera_names=tuple(CAMS))
    out = PerceptionPipeline(GatedBoxEngine(), cfg).process(make_frame())
    arr = output_arrays(out, cfg, want={"moving", "markers"})
    assert list(arr.moving.dtype.names) == ["x", "y", "z", "vx", "vy", "vz", "moving_prob"]
    # The two voxels of the moving column, not the still one and none of the free (fast) ones.
    assert len(arr.moving) == 2 and set(arr.moving["y"].tolist()) == {-0.5}
    assert set(arr.moving["vx"].tolist()) == {2.0}
    np.testing.assert_allclose(arr.moving["moving_prob"], 0.9)
    # One arrow per moving voxel, ending where the voxel is after flow.arrow_horizon_s (1 s): 2 m ahead.
    assert arr.arrows.shape == (2, 2, 3)
    np.testing.assert_allclose(arr.arrows[:, 1] - arr.arrows[:, 0], [[2.0, 0, 0]] * 2)
    capped = output_arrays(out, PerceptionConfig.from_dict({"camera_names": CAMS, "flow.max_arrows": 1}), {"markers"})
    assert capped.arrows.shape == (1, 2, 3) and capped.moving is None


class SoftGateBoxEngine(BoxEngine):
    """BoxEngine whose gated flow leaks: 2 m/s x probability everywhere, probability 0.9 in one
    occupied column and 0.2 elsewhere (a network's sigmoid is never exactly 0)."""

    def infer(self, inputs):
        out = super().infer(inputs)
        motion = np.full(GRID.shape, 0.2, np.float32)
        motion[10:12, 7, 1] = 0.9
        out.flow_mps *= motion[..., None]
        out.motion_prob = motion
        return out


def test_flow_is_published_where_the_motion_gate_says_moving_and_zero_elsewhere():
    cfg = PerceptionConfig(camera_names=tuple(CAMS))
    out = PerceptionPipeline(SoftGateBoxEngine(), cfg).process(make_frame())
    moving = out.motion_prob >= 0.5
    np.testing.assert_allclose(out.flow_mps[moving][:, 0], 1.8)           # the network's gated flow, unchanged
    assert not out.flow_mps[~moving].any()                                # p = 0.2 < 0.5: static, flow 0
    flow = output_arrays(out, cfg, {"flow"}).flow
    assert len(flow) == 4                                                 # layout kept: every occupied voxel
    np.testing.assert_allclose(sorted(flow["vx"].tolist()), [0.0, 0.0, 1.8, 1.8], rtol=1e-6)
    lenient = PerceptionConfig.from_dict({"camera_names": CAMS, "flow.moving_min_prob": 0.1})
    out = PerceptionPipeline(SoftGateBoxEngine(), lenient).process(make_frame())
    np.testing.assert_allclose(out.flow_mps[~moving][:, 0], 0.4)


def test_without_a_motion_gate_a_voxel_moves_when_its_speed_reaches_half_a_metre_per_second():
    cfg = PerceptionConfig(camera_names=tuple(CAMS))
    out = PerceptionPipeline(BoxEngine(), cfg).process(make_frame())      # 2 m/s everywhere, no motion_prob
    assert out.motion_prob is None
    moving = output_arrays(out, cfg, {"moving"}).moving
    assert len(moving) == 4 and set(moving["moving_prob"].tolist()) == {1.0}
    slow = PerceptionConfig.from_dict({"camera_names": CAMS, "flow.moving_min_speed_mps": 3.0})
    assert len(output_arrays(out, slow, {"moving"}).moving) == 0


def test_cameras_are_reordered_to_the_configured_order_and_missing_ones_are_named():
    pipe = PerceptionPipeline(BoxEngine(), PerceptionConfig(camera_names=("CAM_B", "CAM_A")))
    frame = make_frame()
    out = pipe.process(frame)
    assert out.camera_names == ["CAM_B", "CAM_A"]
    np.testing.assert_allclose(pipe.engine.calls[0].T_base_cam[0], frame.T_base_cam[1].astype(np.float32))
    with pytest.raises(FrameError, match=r"missing camera\(s\) \['CAM_B'\]"):
        pipe.process(make_frame(stamp_ns=2_000_000_000, names=["CAM_A", "CAM_C"]))


def test_engine_camera_count_must_match_the_configuration():
    with pytest.raises(ConfigError, match="parameter 'camera_names'"):
        PerceptionPipeline(BoxEngine(num_cameras=6), PerceptionConfig(camera_names=tuple(CAMS)))


def test_temporal_inputs_and_resets_on_clock_jump_back_and_gaps():
    engine = BoxEngine()
    pipe = PerceptionPipeline(engine, PerceptionConfig(camera_names=tuple(CAMS), max_clock_jump_s=1.0),
                              temporal=True, max_gap_s=1.0)
    T0 = np.eye(4)
    T1 = make_transform(np.eye(3), np.array([0.5, 0.0, 0.0]))      # ego moved 0.5 m forward
    pipe.process(make_frame(2_000_000_000, T_world_base=T0))
    pipe.process(make_frame(2_100_000_000, T_world_base=T1))
    np.testing.assert_allclose(engine.calls[1].T_prev_cur[:3, 3], [0.5, 0, 0])   # cur -> prev
    assert engine.resets == 0
    # 0.2 s older than the previous frame: late (max_clock_jump_s 1.0), refused, nothing reset
    with pytest.raises(LateFrame, match="late"):
        pipe.process(make_frame(1_900_000_000, T_world_base=T0))
    assert len(engine.calls) == 2 and engine.resets == 0
    pipe.process(make_frame(500_000_000, T_world_base=T0))                      # 1.6 s back: the bag looped
    assert engine.resets == 1 and engine.calls[2].T_prev_cur is None
    pipe.process(make_frame(3_000_000_000, T_world_base=T0))                    # 2.5 s gap
    assert engine.resets == 2 and engine.calls[3].T_prev_cur is None
    assert pipe.stats.resets == {"clock_jump_back": 1, "gap": 1}


def test_frame_without_ego_pose_is_processed_alone_and_restarts_the_sequence():
    engine = BoxEngine()
    pipe = PerceptionPipeline(engine, PerceptionConfig(camera_names=tuple(CAMS)), temporal=True, max_gap_s=1.0)
    T = [make_transform(np.eye(3), np.array([0.5 * i, 0.0, 0.0])) for i in range(5)]
    pipe.process(make_frame(1_000_000_000, T_world_base=T[0]))
    pipe.process(make_frame(1_100_000_000, T_world_base=T[1]))
    assert engine.calls[1].T_prev_cur is not None and pipe.stats.temporal_frames == 1
    out = pipe.process(make_frame(1_200_000_000), pose_known=False)              # no odometry for this one
    assert engine.calls[2].T_prev_cur is None and engine.resets == 1 and out.occupied.any()
    # The next frame has a pose but its predecessor had none: nothing to warp from.
    pipe.process(make_frame(1_300_000_000, T_world_base=T[3]))
    assert engine.calls[3].T_prev_cur is None
    pipe.process(make_frame(1_400_000_000, T_world_base=T[4]))
    np.testing.assert_allclose(engine.calls[4].T_prev_cur[:3, 3], [0.5, 0, 0])
    nan_pose = np.full((4, 4), np.nan)                                            # a non-finite pose counts as none
    pipe.process(make_frame(1_500_000_000, T_world_base=nan_pose))
    assert engine.calls[5].T_prev_cur is None
    assert pipe.stats.temporal_frames == 2 and pipe.stats.resets == {"no_pose": 2} and pipe.stats.frames == 6


def test_non_temporal_pipeline_never_passes_previous_frames():
    engine = BoxEngine()
    pipe = PerceptionPipeline(engine, PerceptionConfig(camera_names=tuple(CAMS)), temporal=False)
    pipe.process(make_frame(1_000_000_000))
    pipe.process(make_frame(1_100_000_000))
    assert engine.calls[1].T_prev_cur is None


def test_real_untrained_torch_model_runs_through_the_pipeline():
    from mv4d_core.models import ModelConfig

    mcfg = ModelConfig.tiny().replace(num_cameras=2, temporal=True)
    engine = TorchEngine.from_model_config(mcfg)
    pipe = PerceptionPipeline(engine, PerceptionConfig(camera_names=tuple(CAMS)), temporal=True)
    out1 = pipe.process(make_frame(1_000_000_000, h=90, w=160))
    out2 = pipe.process(make_frame(1_100_000_000, h=90, w=160))
    X, Y, Z = mcfg.grid.shape
    assert out2.occupancy_prob.shape == (X, Y, Z) and out2.flow_mps.shape == (X, Y, Z, 3)
    assert out2.depth_m.shape == (2, mcfg.image_height // 4, mcfg.image_width // 4)
    assert np.all(np.isfinite(out1.occupancy_prob)) and np.all((out1.occupancy_prob >= 0) & (out1.occupancy_prob <= 1))
    # The untrained SDF head starts as the ground plane z = 0: the lowest layer (centre -0.6 m) is
    # occupied and the layers above are free, whatever the images.
    assert out1.occupied[:, :, 0].all() and not out1.occupied[:, :, 2:].any()
    assert len(out2.points_xyz) > 0 and np.all(np.isfinite(out2.points_xyz))
    # The engine reports that it fused the first frame's volume into the second.
    assert pipe.stats.temporal_frames == 1


# ----------------------------------------------------------------------------- engine creation
def _save_tiny_checkpoint(path, **extra):
    import torch

    from mv4d_core.models import ModelConfig, build_model
    from mv4d_core.training.checkpoint import save_atomic

    cfg = ModelConfig.tiny().replace(num_cameras=2)
    torch.manual_seed(1)
    model = build_model(cfg)
    save_atomic({"model_config": cfg.to_dict(), "model": model.state_dict(), **extra}, path)
    return cfg, model


def test_create_engine_loads_a_checkpoint_and_prefers_ema_weights(tmp_path):
    import torch

    cfg, model = _save_tiny_checkpoint(tmp_path / "plain.pt")
    engine = create_engine("torch", str(tmp_path / "plain.pt"), "cpu")
    assert isinstance(engine, TorchEngine) and engine.spec.num_cameras is None      # cameras are data
    assert engine.spec.image_hw == (cfg.image_height, cfg.image_width) and engine.spec.grid == cfg.grid
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    _save_tiny_checkpoint(tmp_path / "ema.pt", ema=ema)
    loaded = create_engine("torch", str(tmp_path / "ema.pt"), "cpu").model.state_dict()
    name = next(k for k, v in ema.items() if v.is_floating_point())
    assert torch.equal(loaded[name], ema[name])


@pytest.mark.parametrize("engine,checkpoint,device,parameter", [
    ("onnxruntime", "", "cpu", "checkpoint"),  # no shipped .onnx
    ("torch", "/nonexistent/model.pt", "cpu", "checkpoint"),
])
def test_create_engine_errors_name_the_parameter(engine, checkpoint, device, parameter):
    with pytest.raises(EngineError) as err:
        create_engine(engine, checkpoint, device)
    assert err.value.parameter == parameter


def test_checkpoint_without_model_config_is_rejected(tmp_path):
    import torch

    torch.save({"model": {}}, tmp_path / "bare.pt")
    with pytest.raises(EngineError, match="no 'model_config'") as err:
        create_engine("torch", str(tmp_path / "bare.pt"), "cpu")
    assert err.value.parameter == "checkpoint"


def test_cuda_device_without_cuda_names_the_device_parameter(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the refusal path cannot be exercised")
    _save_tiny_checkpoint(tmp_path / "m.pt")
    with pytest.raises(EngineError, match="CUDA") as err:
        create_engine("torch", str(tmp_path / "m.pt"), "cuda")
    assert err.value.parameter == "device"


@pytest.mark.gpu
def test_torch_engine_runs_on_cuda(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _save_tiny_checkpoint(tmp_path / "m.pt")
    pipe = PerceptionPipeline(create_engine("torch", str(tmp_path / "m.pt"), "cuda"),
                              PerceptionConfig(camera_names=tuple(CAMS)))
    out = pipe.process(make_frame(h=96, w=176))
    assert out.occupancy_prob.shape == pipe.engine.spec.grid.shape and out.occupied[:, :, 0].all()
