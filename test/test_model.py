"""Model specification: config, inputs, LSS lifting, masking, temporal warp, heads, published outputs."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from mv4d_core.data import synth
from mv4d_core.data.frame import FrameRecord
from mv4d_core.geometry.camera import R_BODY_OPTICAL, PinholeCamera
from mv4d_core.geometry.transforms import transform_points
from mv4d_core.geometry.voxel_grid import OCC3D, TINY, VoxelGridSpec
from mv4d_core.models import ModelConfig, ModelInputs, ModelOutputs, build_model, count_parameters, resize_cameras
from mv4d_core.models.inputs import relative_pose
from mv4d_core.models.backbone import random_patch_mask
from mv4d_core.models.config import MaskingConfig
from mv4d_core.models.lift import LSSLift, depth_bin_centers, feature_pixel_centers
from mv4d_core.models.temporal import TemporalFusion, warp_volume


def ring_rig(num=6, width=176, height=96, f=90.0):
    """``num`` cameras 1.6 m above base_link spread around the yaw circle: (K (N,3,3), T_base_cam (N,4,4))."""
    Ks, Ts = [], []
    for i in range(num):
        yaw = 2 * math.pi * i / num
        c, s = math.cos(yaw), math.sin(yaw)
        T = np.eye(4)
        T[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ R_BODY_OPTICAL
        T[:3, 3] = (0.5 * c, 0.5 * s, 1.6)
        Ks.append([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])
        Ts.append(T)
    return np.array(Ks, dtype=np.float64), np.array(Ts)


def frame_inputs(frame, cfg: ModelConfig, prev=None) -> ModelInputs:
    """A FrameRecord at the model size (the resize rule every tool uses), T_prev_cur from ``prev``."""
    rgb, K = resize_cameras(frame.images, frame.intrinsics, cfg.image_height, cfg.image_width)
    images = torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div(255)[None]
    inputs = ModelInputs(images, torch.from_numpy(K).float()[None], torch.from_numpy(frame.T_base_cam).float()[None])
    if prev is None:
        return inputs
    T = torch.from_numpy(relative_pose(prev.T_world_base, frame.T_world_base)).float()[None]
    X, Y, Z = cfg.grid.shape
    return inputs.with_previous(torch.zeros(1, cfg.volume_channels, X, Y, Z), T)


def make_inputs(cfg: ModelConfig, batch=1, seed=0) -> ModelInputs:
    K, T = ring_rig(cfg.num_cameras, cfg.image_width, cfg.image_height)
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, cfg.num_cameras, 3, cfg.image_height, cfg.image_width, generator=g)
    return ModelInputs(images, torch.from_numpy(K).float().expand(batch, -1, -1, -1).clone(),
                       torch.from_numpy(T).float().expand(batch, -1, -1, -1).clone())


@pytest.fixture(scope="module")
def tiny_run():
    """One tiny forward + backward on CPU (shared by several tests to keep the file fast)."""
    torch.manual_seed(0)
    cfg = ModelConfig.tiny().replace(masking=MaskingConfig(True, 0.3, 16))
    model = build_model(cfg).train()
    inputs = make_inputs(cfg)
    out = model(inputs)
    loss = out.depth_m.mean() + out.sdf.abs().mean() + out.flow_mps.abs().mean() + out.rgb.mean()
    loss.backward()
    return cfg, model, inputs, out


# --- config ---------------------------------------------------------------------------------------------------

def test_config_presets_and_yaml_round_trip(tmp_path):
    tiny, base = ModelConfig.tiny(), ModelConfig.base()
    assert (tiny.image_height, tiny.image_width, tiny.grid) == (96, 176, TINY)
    assert (base.image_height, base.image_width, base.grid) == (256, 704, OCC3D)
    assert tiny.depth.num_bins == 48 and (tiny.depth.min_m, tiny.depth.max_m) == (1.0, 48.0)
    path = tmp_path / "model.yaml"
    base.save_yaml(path)
    assert ModelConfig.from_yaml(path) == base
    path.write_text("model:\n  size: tiny\n  volume_channels: 24\n  masking: {enabled: true, patch_size: 8}\n")
    cfg = ModelConfig.from_yaml(path)
    assert cfg.volume_channels == 24 and cfg.masking.enabled and cfg.masking.patch_size == 8
    assert cfg.masking.ratio == 0.3 and cfg.grid == TINY


def test_config_rejects_unknown_keys_and_bad_sizes():
    with pytest.raises(ValueError, match="bogus"):
        ModelConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="image_height"):
        ModelConfig(image_height=90)


def test_tiny_model_has_one_to_three_million_parameters_and_base_is_larger():
    n_tiny = count_parameters(build_model("tiny"))
    assert 1_000_000 <= n_tiny <= 3_000_000
    assert count_parameters(build_model("base")) > 3 * n_tiny


# --- forward / backward ---------------------------------------------------------------------------------------

def test_tiny_forward_shapes_frames_and_units(tiny_run):
    cfg, _, _, out = tiny_run
    assert isinstance(out, ModelOutputs)
    B, N, D = 1, 6, 48
    X, Y, Z = TINY.shape
    assert out.sdf.shape == (B, X, Y, Z) and out.occupancy_prob.shape == (B, X, Y, Z)
    assert out.flow_mps.shape == (B, 3, X, Y, Z)
    assert out.rgb.shape == (B, 3, X, Y, Z)
    assert out.field.shape == (B, 1 + 3, X, Y, Z)
    assert out.depth_m.shape == (B, N, 24, 44)                   # stride 4 of 96 x 176
    assert out.state_volume.shape == (B, cfg.volume_channels, X, Y, Z)
    assert set(out.inference_tensors()) == {"occupancy_prob", "flow_mps", "motion_prob", "depth_m", "state_volume"}
    # occupancy is derived from the SDF: occupied where the surface passes within half a voxel
    margin = cfg.occupancy_margin_m
    assert margin == 0.5 * min(cfg.grid.voxel_size)
    assert bool(((out.occupancy_prob >= 0.5) == (out.sdf <= margin)).all())
    assert 0.0 <= out.rgb.min() and out.rgb.max() <= 1.0
    # untrained flow is small (last layer ~N(0, 1e-2)), in m/s: mean |flow| 0.010-0.012 over model seeds 0-2;
    # PyTorch's default conv init on that layer gives 0.2
    assert out.flow_mps.abs().mean() < 0.05


def test_depth_is_the_expectation_of_the_stride4_bin_distribution(tiny_run):
    cfg, model, inputs, _ = tiny_run
    B, N, D = 1, 6, 48
    model.eval()
    with torch.no_grad():
        depth_prob, _, depth_m = model.encode(inputs.images)
        feat8, skip4 = model.neck(model.backbone(inputs.images.reshape(B * N, 3, 96, 176)))
        logits4 = model.depth_net(feat8, skip4)[2]
    model.train()
    assert depth_prob.shape == (B, N, D, 12, 22)                  # stride 8, used for lifting
    torch.testing.assert_close(depth_prob.sum(2), torch.ones(B, N, 12, 22))
    bins = depth_bin_centers(cfg.depth)
    assert bins.min() == 1.0 and bins.max() == 48.0 and bins.shape == (D,)
    expected = (logits4.softmax(1) * bins.view(1, D, 1, 1)).sum(1).view(B, N, 24, 44)
    torch.testing.assert_close(depth_m, expected)


def test_untrained_sdf_is_height_above_ground(tiny_run):
    _, model, _, out = tiny_run
    # the last SDF conv starts at zero, so the untrained output is exactly the z-prior
    z = TINY.range_min[2] + (torch.arange(8) + 0.5) * TINY.voxel_size[2]
    torch.testing.assert_close(out.sdf[0, 17, 42], z)
    assert bool((out.occupancy_prob[0, :, :, 0] > 0.5).all()) and bool((out.occupancy_prob[0, :, :, 2:] < 0.5).all())


def test_gradients_reach_backbone_depth_net_and_heads(tiny_run):
    _, model, _, _ = tiny_run
    for name, p in [("backbone stem", model.backbone.stem[0].weight), ("depth net", model.depth_net.out.weight),
                    ("3d neck", model.neck3d.net[0].weight), ("flow head", model.heads.flow.weight)]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_model_rejects_images_of_the_wrong_size():
    cfg = ModelConfig.tiny()
    bad = make_inputs(cfg.replace(image_height=64, image_width=128))
    with pytest.raises(ValueError, match="96x176"):
        build_model(cfg)(bad)


# --- LSS lifting ----------------------------------------------------------------------------------------------

def test_voxel_pooling_puts_a_pixel_at_a_known_depth_in_the_right_voxel():
    cfg = ModelConfig.tiny()
    K, T = ring_rig(2, 176, 96)
    lift = LSSLift(TINY, cfg.depth, stride=8)
    h, w, D, C = 12, 22, 48, 2
    prob = torch.zeros(1, 2, D, h, w, dtype=torch.float64)
    ctx = torch.zeros(1, 2, C, h, w, dtype=torch.float64)
    cam, row, col, k = 1, 7, 15, 9                                # camera 1, feature pixel (7, 15), bin 9 (10 m)
    prob[0, cam, k, row, col] = 1.0
    ctx[0, cam, :, row, col] = torch.tensor([3.0, -2.0], dtype=torch.float64)
    vol = lift(prob, ctx, torch.from_numpy(K)[None], torch.from_numpy(T)[None])
    assert vol.shape == (1, C, *TINY.shape)
    nz = vol[0, 0].nonzero()
    assert nz.shape[0] == 1
    uv = feature_pixel_centers(h, w, 8, dtype=torch.float64)[row, col].numpy()
    depth = depth_bin_centers(cfg.depth, dtype=torch.float64)[k].item()
    assert depth == 10.0
    p_cam = PinholeCamera(K[cam], 176, 96).unproject(uv[None], np.array([depth]))
    p_base = transform_points(T[cam], p_cam)
    idx, inside = TINY.points_to_voxels(p_base)
    assert inside[0]
    assert nz[0].tolist() == idx[0].tolist()
    assert vol[0, :, idx[0, 0], idx[0, 1], idx[0, 2]].tolist() == [3.0, -2.0]


def test_voxel_pooling_drops_points_outside_the_grid():
    cfg = ModelConfig.tiny()
    K, T = ring_rig(1, 176, 96)
    T[0, 2, 3] = 100.0                                            # camera far above the grid
    lift = LSSLift(TINY, cfg.depth, stride=8)
    vol = lift(torch.full((1, 1, 48, 12, 22), 1 / 48), torch.ones(1, 1, 4, 12, 22),
               torch.from_numpy(K).float()[None], torch.from_numpy(T).float()[None])
    assert vol.abs().sum().item() == 0.0


# --- masking --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio,patch", [(0.3, 16), (0.5, 32), (0.0, 16)])
def test_patch_mask_hides_the_requested_fraction_of_whole_patches(ratio, patch):
    keep = random_patch_mask(4, 96, 176, patch, ratio, torch.Generator().manual_seed(1))
    assert keep.shape == (4, 1, 96, 176)
    ph, pw = math.ceil(96 / patch), math.ceil(176 / patch)
    for b in range(4):
        padded = torch.full((ph * patch, pw * patch), 0.5)        # 0.5 marks pixels beyond the image
        padded[:96, :176] = keep[b, 0]
        patches = padded.view(ph, patch, pw, patch).permute(0, 2, 1, 3).reshape(ph * pw, -1)
        masked = (patches[:, 0] == 0)
        # each patch is all-kept or all-masked (within the image), and exactly round(ratio * n) are masked
        assert int(masked.sum()) == round(ratio * ph * pw)
        assert bool(((patches != 1).all(1) | (patches != 0).all(1)).all())
    assert set(keep.unique().tolist()) <= {0.0, 1.0}


def test_model_masks_inputs_only_in_training():
    cfg = ModelConfig.tiny().replace(masking=MaskingConfig(True, 0.3, 16))
    model = build_model(cfg)
    seen = []
    model.backbone.stem.register_forward_hook(lambda m, i, o: seen.append((i[0] == 0).float().mean().item()))
    inputs = make_inputs(cfg)
    inputs.images.clamp_(0.01, 1.0)
    with torch.no_grad():
        model.eval()(inputs)
        model.train()(inputs)
    n = math.ceil(96 / 16) * math.ceil(176 / 16)
    assert seen[0] == 0.0
    assert seen[1] == pytest.approx(round(0.3 * n) / n, abs=1e-6)


# --- temporal fusion ------------------------------------------------------------------------------------------

def test_warp_by_pure_translation_shifts_content_by_whole_voxels():
    X, Y, Z = TINY.shape
    prev = torch.zeros(1, 1, X, Y, Z)
    prev[0, 0, 50, 40, 3] = 1.0
    T_prev_cur = torch.eye(4)[None]
    T_prev_cur[0, 0, 3] = 2 * TINY.voxel_size[0]                  # ego drove 1.6 m forward (+x)
    T_prev_cur[0, 1, 3] = -TINY.voxel_size[1]                     # and 0.8 m to the right (-y)
    warped, valid = warp_volume(prev, T_prev_cur, TINY, return_valid=True)
    nz = (warped[0, 0] > 1e-4).nonzero().tolist()                # float32 rounding may leak ~1e-6
    assert nz == [[48, 41, 3]]                                    # static content moves back by the ego motion
    assert warped[0, 0, 48, 41, 3].item() == pytest.approx(1.0, abs=1e-4)
    assert valid[0, 0, -2:].sum() == 0 and valid[0, 0, :-2, 1:].all()


def test_warp_by_yaw_rotates_content_about_base_link():
    X, Y, Z = TINY.shape
    prev = torch.zeros(1, 1, X, Y, Z)
    prev[0, 0, 60, 50, 2] = 1.0                                   # centre (8.4, 0.4, 1.2) m
    c, s = math.cos(math.pi / 2), math.sin(math.pi / 2)
    T_prev_cur = torch.tensor([[[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]])   # ego yawed -90 deg
    warped = warp_volume(prev, T_prev_cur, TINY)
    # current point p maps to R p in prev; content at prev (8.4, 0.4) appears at R^T (8.4, 0.4) = (0.4, -8.4)
    idx, _ = TINY.points_to_voxels(np.array([[0.4, -8.4, 1.2]]))
    assert warped[0, 0].argmax().item() == np.ravel_multi_index(tuple(idx[0]), (X, Y, Z))


def test_temporal_fusion_treats_prev_valid_zero_as_a_first_frame():
    gen = torch.Generator().manual_seed(0)
    fusion = TemporalFusion(4, TINY)
    with torch.no_grad():
        fusion.fuse.weight.normal_(0, 0.1, generator=gen)
    cur = torch.randn(2, 4, *TINY.shape, generator=gen)
    prev = torch.randn(2, 4, *TINY.shape, generator=gen)
    eye = torch.eye(4).expand(2, 4, 4)
    none = fusion(cur, torch.zeros_like(cur), eye, torch.zeros(2))
    ignored = fusion(cur, prev, eye, torch.zeros(2))               # a previous volume flagged invalid is ignored
    torch.testing.assert_close(ignored, none)
    mixed = fusion(cur, prev, eye, torch.tensor([1.0, 0.0]))       # per sample: fused, first frame
    assert not torch.allclose(mixed[0], none[0]) and torch.equal(mixed[1], none[1])
    with pytest.raises(ValueError, match="prev_volume shape"):
        fusion(cur, prev[:, :2], eye, torch.ones(2))


def test_identity_init_of_the_fusion_passes_the_current_volume():
    fusion = TemporalFusion(4, TINY)
    cur = torch.randn(2, 4, *TINY.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(fusion(cur, torch.zeros_like(cur), torch.eye(4).expand(2, 4, 4), torch.zeros(2)), cur)


def test_model_consumes_previous_state(tiny_run):
    cfg, model, inputs, out = tiny_run
    T = torch.eye(4)[None]
    T[0, 0, 3] = 1.0
    with torch.no_grad():
        model.temporal.fuse.weight.normal_(0, 0.1)
        o1 = model.eval()(inputs.with_previous(out.state_volume.detach(), T))
        o0 = model(inputs)
        o_flag0 = model(inputs.with_previous(out.state_volume.detach(), T, torch.zeros(1)))
    model.train()
    assert o1.rgb.shape == o0.rgb.shape and not torch.allclose(o1.rgb, o0.rgb)
    torch.testing.assert_close(o_flag0.rgb, o0.rgb)                 # prev_valid = 0: the first-frame result


# --- inputs from frames and published outputs ---------------------------------------------------------------

def make_frames(num=2, width=352, height=192):
    K, T = ring_rig(6, width, height, f=180.0)
    rng = np.random.default_rng(0)
    frames = []
    for i in range(num):
        pose = np.eye(4)
        pose[0, 3] = 1.5 * i                                      # ego drives 1.5 m forward per frame
        frames.append(FrameRecord(stamp_ns=1_000_000_000 * (i + 1), camera_names=[f"C{j}" for j in range(6)],
                                  images=rng.integers(0, 255, (6, height, width, 3), dtype=np.uint8),
                                  intrinsics=K, T_base_cam=T, T_world_base=pose))
    return frames


def test_frames_reach_the_model_size_with_intrinsics_and_ego_motion():
    cfg = ModelConfig.tiny()
    prev, cur = make_frames()
    inputs = frame_inputs(cur, cfg, prev)
    assert inputs.images.shape == (1, 6, 3, 96, 176)
    assert inputs.images.dtype == torch.float32 and 0 <= inputs.images.min() and inputs.images.max() <= 1
    np.testing.assert_allclose(inputs.intrinsics[0, 2].numpy(),
                               PinholeCamera(cur.intrinsics[2], 352, 192).resized(176, 96).K, rtol=1e-6)
    # T_prev_cur maps current base_link into the previous one: the current origin was 1.5 m ahead
    np.testing.assert_allclose(inputs.T_prev_cur[0, :3, 3].numpy(), [1.5, 0.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="prev_volume, T_prev_cur and prev_valid"):
        ModelInputs(inputs.images, inputs.intrinsics, inputs.T_base_cam, T_prev_cur=inputs.T_prev_cur)


@pytest.mark.slow
def test_tiny_model_exports_to_onnx_and_onnxruntime_matches_torch(tmp_path):
    cfg = ModelConfig.tiny()
    model = build_model(cfg).eval()
    inputs = make_inputs(cfg)

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, images, K, T):
            o = self.m(ModelInputs(images, K, T))
            return o.occupancy_prob, o.depth_m, o.flow_mps

    wrapper = Wrapper(model).eval()
    args = (inputs.images, inputs.intrinsics, inputs.T_base_cam)
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(wrapper, args, str(path), dynamo=True)
    sess = ort.InferenceSession(str(path))
    got = sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)})
    with torch.no_grad():
        ref = wrapper(*args)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=1e-4)


# --- cross-checks against the synthetic world's ground truth (mv4d_core.data.synth) --------------------------

@pytest.fixture(scope="module")
def synth_frames():
    return synth.generate_sequence(2, seed=0, size="tiny")


def test_lss_lift_of_ground_truth_depth_lands_in_ground_truth_occupied_voxels(synth_frames):
    """One-hot depth bins from the synthetic GT depth, lifted through the model-size K and T_base_cam,
    must fall on the synthetic GT occupancy: checks the frames/units contract between data and model."""
    from scipy.ndimage import binary_dilation

    cfg = ModelConfig.tiny()
    frame = synth_frames[1]
    inputs = frame_inputs(frame, cfg)
    assert frame.image_size == (96, 176)
    d = torch.from_numpy(frame.gt.depth_m).double().view(6, 12, 8, 22, 8)[:, :, 3:5, :, 3:5]   # 2x2 px at centres
    finite = torch.isfinite(d).all(-1).all(-2)
    d = torch.where(torch.isfinite(d), d, torch.zeros_like(d))
    centre = d.mean((-1, -3))
    flat = (d.amax((-1, -3)) - d.amin((-1, -3))) < 0.2                 # skip depth edges
    ok = finite & flat & (centre >= 1) & (centre <= 48)
    bins = depth_bin_centers(cfg.depth, dtype=torch.float64)
    k = (centre[..., None] - bins).abs().argmin(-1)
    prob = torch.zeros(1, 6, 48, 12, 22, dtype=torch.float64)
    prob[0].scatter_(1, k.unsqueeze(1), ok.unsqueeze(1).double())
    lift = LSSLift(cfg.grid, cfg.depth, stride=8)
    vol = lift(prob, torch.ones(1, 6, 1, 12, 22, dtype=torch.float64), inputs.intrinsics.double(),
               inputs.T_base_cam.double())[0, 0].numpy()
    occupied = frame.gt.occupancy > 0
    assert ok.sum() > 300 and vol.sum() > 300
    assert vol[occupied].sum() / vol.sum() > 0.85
    assert vol[binary_dilation(occupied, np.ones((3, 3, 3), bool))].sum() / vol.sum() > 0.98


def test_ego_warp_of_ground_truth_occupancy_aligns_consecutive_frames(synth_frames):
    prev, cur = synth_frames
    inputs = frame_inputs(cur, ModelConfig.tiny(), prev)
    assert inputs.T_prev_cur[0, :3, 3].norm() > 0.4                   # the ego really moved
    occ_prev = torch.from_numpy((prev.gt.occupancy > 0).astype(np.float32))[None, None]
    occ_cur = cur.gt.occupancy > 0
    warped = warp_volume(occ_prev, inputs.T_prev_cur, TINY)[0, 0].numpy() > 0.5

    def iou(a, b):                                                  # above the ground layers (z >= 0.6 m)
        a, b = a[:, :, 2:], b[:, :, 2:]
        return (a & b).sum() / (a | b).sum()

    assert iou(warped, occ_cur) > iou(occ_prev[0, 0].numpy() > 0.5, occ_cur) + 0.03
    assert iou(warped, occ_cur) > 0.9


def test_flow_gate_multiplies_velocity_by_a_per_voxel_motion_probability():
    from mv4d_core.models.heads import VoxelHeads

    grid = VoxelGridSpec((-2.0, -2.0, -1.0), (2.0, 2.0, 1.0), (1.0, 1.0, 1.0))
    feats = torch.randn(1, 8, *grid.shape, generator=torch.Generator().manual_seed(0))
    plain, gated = VoxelHeads(8, grid), VoxelHeads(8, grid, flow_gate=True)
    assert plain.flow_gate is None and gated.flow_gate is not None
    gated.load_state_dict({**plain.state_dict(), **{f"flow_gate.{k}": v for k, v in gated.flow_gate.state_dict().items()}})
    with torch.no_grad():
        gated.flow_gate.weight.zero_()
        gated.flow_gate.bias.fill_(-30.0)                   # "nothing moves": exactly the static world
        assert gated(feats)["flow_mps"].abs().max() < 1e-10
        gated.flow_gate.bias.fill_(30.0)                    # "everything may move": the plain head
        torch.testing.assert_close(gated(feats)["flow_mps"], plain(feats)["flow_mps"])
