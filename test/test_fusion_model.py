"""The fusion model: one set of weights on any number of cameras, the LiDAR branch degrading to
camera-only, the pipeline feeding it (and counting what it could not), and the exported graph."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mv4d_core.data.synth import generate_sequence
from mv4d_core.engines.torch_engine import TorchEngine
from mv4d_core.export.wrapper import ExportWrapper, example_inputs
from mv4d_core.models import ModelConfig, ModelInputs, build_model
from mv4d_core.models.config import LidarConfig
from mv4d_core.pipeline import PerceptionConfig, PerceptionPipeline
from builders import randomised_model

CFG = ModelConfig.tiny().replace(lidar=LidarConfig(enabled=True), flow_gate=True)


_randomised = randomised_model


@pytest.fixture(scope="module")
def frames():
    return generate_sequence(3, seed=7)


def _drop_camera(frame, k):
    keep = [i for i in range(frame.num_cameras) if i != k]
    return dataclasses.replace(frame, camera_names=[frame.camera_names[i] for i in keep], images=frame.images[keep],
                               intrinsics=frame.intrinsics[keep], T_base_cam=frame.T_base_cam[keep],
                               camera_stamps_ns=frame.camera_stamps_ns[keep], gt=None)


def test_one_set_of_weights_runs_on_five_and_six_cameras(frames):
    engine = TorchEngine(_randomised(CFG), CFG)
    six = PerceptionPipeline(engine, PerceptionConfig(camera_names=tuple(frames[0].camera_names)))
    out6 = six.process(frames[0])
    five_frame = _drop_camera(frames[0], 4)
    five = PerceptionPipeline(engine, PerceptionConfig(camera_names=tuple(five_frame.camera_names)))
    out5 = five.process(five_frame)
    assert out6.depth_m.shape == (6, 96, 176) and out5.depth_m.shape == (5, 96, 176)   # full-resolution depth
    assert out5.camera_names == five_frame.camera_names
    # the per-camera depth of a camera does not need the dropped one: only the shared volume changed
    keep = [0, 1, 2, 3, 5]
    rel = np.abs(out5.depth_m - out6.depth_m[keep]) / out6.depth_m[keep]
    assert np.median(rel) < 0.05


def test_without_a_sweep_the_untrained_depth_head_publishes_the_camera_depth():
    model = build_model(CFG).eval()
    ex = example_inputs(CFG, batch=1, seed=2)
    none = ModelInputs(*ex[:6], lidar_volume=ex[6], lidar_depth=ex[7], lidar_valid=torch.zeros(1))
    with torch.no_grad():
        out = model(none)
        cam = model.encode(none.images)[2]
    up = torch.nn.functional.interpolate(cam, size=(96, 176), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.depth_m, up.clamp(min=0.5), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        implicit = model(ModelInputs(*ex[:6]))                    # no LiDAR inputs at all: the same
    torch.testing.assert_close(implicit.depth_m, out.depth_m)


def test_the_depth_head_changes_its_base_only_near_input_lidar_pixels():
    from mv4d_core.models.lidar_branch import DepthRefiner

    torch.manual_seed(0)
    head = DepthRefiner(8, support_px=2).eval()
    with torch.no_grad():
        head.out.weight.normal_(0.0, 0.5)
        head.out.bias.fill_(0.3)
    B, N, H, W = 1, 1, 16, 20
    lidar = torch.zeros(B, N, 3, H, W)
    lidar[..., 1, :, :] = 10.0                    # the completion: 10 m everywhere
    lidar[..., 0, 8, 10] = 10.0                   # one input LiDAR pixel
    lidar[..., 2, 8, 10] = 1.0
    _, residual = head(torch.rand(B, N, 3, H, W), lidar, torch.full((B, N, 4, 5), 20.0), torch.ones(B))
    near = torch.zeros(H, W, dtype=torch.bool)
    near[6:11, 8:13] = True                       # within 2 px (a 5 x 5 window) of (8, 10)
    r = residual[0, 0]
    assert torch.all(r[~near] == 0) and torch.all(r[near] != 0)


def test_the_pipeline_feeds_the_sweep_counts_a_missing_one_and_keeps_the_previous(frames):
    engine = TorchEngine(_randomised(CFG), CFG)
    pipe = PerceptionPipeline(engine, PerceptionConfig(camera_names=tuple(frames[0].camera_names)))
    bad = frames[1].lidar_xyz.copy()
    bad[:100] = np.nan
    pipe.process(frames[0])
    pipe.process(dataclasses.replace(frames[1], lidar_xyz=bad))
    pipe.process(dataclasses.replace(frames[2], lidar_xyz=None, lidar_intensity=None, lidar_time_offset_s=None,
                                     lidar_ring=None))
    assert pipe.stats.lidar_frames == 2 and pipe.stats.lidar_missing == 1
    assert pipe.stats.lidar.nonfinite == 100 and pipe.stats.lidar.outside_grid > 0
    assert len(pipe._sweeps) == 0                # the frame without a sweep leaves none behind
    cam_only = PerceptionPipeline(TorchEngine.from_model_config(ModelConfig.tiny()),
                                  PerceptionConfig(camera_names=tuple(frames[0].camera_names)))
    cam_only.process(frames[0])
    assert cam_only.stats.lidar_frames == cam_only.stats.lidar_missing == 0   # camera-only engines ignore it


def test_a_frame_without_cameras_runs_on_the_lidar_branch_alone_and_publishes_no_depth(frames):
    from mv4d_core.eval.command import select_cameras
    from mv4d_core.pipeline import FrameError
    from mv4d_core.pipeline.pipeline import output_arrays

    cfg = PerceptionConfig(camera_names=tuple(frames[0].camera_names))
    pipe = PerceptionPipeline(TorchEngine(_randomised(CFG), CFG), cfg)
    pipe.process(frames[0])
    out = pipe.process(select_cameras(frames[1], []))               # the cameras failed, the LiDAR did not
    assert pipe.stats.lidar_only_frames == 1 and pipe.stats.lidar_frames == 2
    assert out.depth_m.shape[0] == 0 and len(out.points_xyz) == 0 and out.camera_names == []
    assert out.occupancy_prob.shape == CFG.grid.shape and np.isfinite(out.occupancy_prob).all()
    arrays = output_arrays(out, cfg)
    assert arrays.depth == {} and len(arrays.occupancy) == int(out.occupied.sum()) > 0
    # A camera-only model has nothing to run on: the frame is refused, naming the missing cameras.
    cam_only = PerceptionPipeline(TorchEngine.from_model_config(ModelConfig.tiny()), cfg)
    with pytest.raises(FrameError, match="missing camera"):
        cam_only.process(select_cameras(frames[1], []))


def test_mv4d_eval_scores_the_lidar_only_run_next_to_the_model_without_depth(frames):
    from mv4d_core.data.sources import Sequence
    from mv4d_core.eval.command import LIDAR_ONLY, evaluate

    engines = {"model": TorchEngine(_randomised(CFG), CFG), LIDAR_ONLY: TorchEngine(_randomised(CFG), CFG)}
    scorer, n = evaluate(engines, [Sequence("s", frames)], "1:3", baselines=False, progress=False)
    res = scorer.results()
    assert n == 2 and "depth" in res["model"] and "depth" not in res[LIDAR_ONLY]
    assert res[LIDAR_ONLY]["occupancy"]["num_frames"] == 2 and res[LIDAR_ONLY]["occupancy"]["iou"] > 0


class _RecordingEngine(TorchEngine):
    def infer(self, inputs):
        self.seen.append(None if inputs.lidar_volume is None else inputs.lidar_volume.copy())
        return super().infer(inputs)


def test_a_previous_sweep_too_old_or_without_pose_is_not_used_and_the_reset_is_counted(frames):
    engine = _RecordingEngine(_randomised(CFG), CFG)
    engine.seen = []
    pipe = PerceptionPipeline(engine, PerceptionConfig(camera_names=tuple(frames[0].camera_names)), max_gap_s=1.0)
    previous_channels = slice(4, 6)              # [count, dt] of the previous sweep (lidar_inputs.volume_channels)
    pipe.process(frames[0])                      # a single sweep at the start: no previous one
    pipe.process(frames[1])                      # 0.1 s later: the previous sweep is used
    late = dataclasses.replace(frames[2], stamp_ns=frames[1].stamp_ns + 3_000_000_000)
    pipe.process(late)                           # 3 s gap > max_gap_s: not used, counted as a reset
    no_pose = dataclasses.replace(frames[2], stamp_ns=late.stamp_ns + 100_000_000,
                                  T_world_base=np.full((4, 4), np.nan))
    pipe.process(no_pose)                        # no ego pose: nothing to compensate with
    used = [bool(np.abs(v[previous_channels]).sum() > 0) for v in engine.seen]
    assert used == [False, True, False, False]
    assert pipe.stats.resets.get("gap") == 1 and pipe.stats.resets.get("no_pose") == 1
    assert pipe.stats.lidar_frames == 4          # every frame still ran with its own sweep


@pytest.mark.slow  # one ~12 s export
def test_the_exported_fusion_graph_has_a_camera_axis_and_matches_torch(tmp_path):
    import onnxruntime as ort

    from mv4d_core.export.onnx_export import export_onnx

    model = _randomised(CFG, seed=4)
    res = export_onnx(model, tmp_path / "fusion.onnx")
    assert res.input_names[-3:] == ("lidar_volume", "lidar_depth", "lidar_valid")
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    for n in (5, 6):
        ex = example_inputs(CFG.replace(num_cameras=n), batch=1, seed=n, temporal_prev=True)
        got = sess.run(None, {k: v.numpy() for k, v in zip(res.input_names, ex)})
        with torch.no_grad():
            want = ExportWrapper(model)(*ex)
        for name, g, w in zip(res.output_names, got, want):
            w = w.numpy()
            assert g.shape == w.shape, (name, n)
            # float32 reordering by the exporter; depth reaches 100 m, so the tolerance is relative there
            assert np.abs(g - w).max() <= 2e-4 + 1e-4 * np.abs(w).max(), (name, n)
