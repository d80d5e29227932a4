"""``mv4d demo``: the main job writes every promised file, labels untrained runs, and fails clearly.

The end-to-end runs use ``--random-init`` (an untrained tiny model) so they stay fast and do not
depend on the shipped weights; the report must then say UNTRAINED everywhere.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mv4d_core.cli import main as mv4d
from mv4d_core.data.classes import FREE, IGNORE, ROAD, VEHICLE
from mv4d_core.demo.outputs_bag import scatter_flow, scatter_occupancy
from mv4d_core.demo.panels import bev_image, bev_top_labels
from mv4d_core.demo.pointcloud_render import read_ply, render_points, write_ply
from mv4d_core.geometry.voxel_grid import TINY
from mv4d_core.pipeline.postprocess import flow_points, occupied_voxels

PANELS = ("cameras_depth.png", "bev_occupancy.png", "flow_bev.png", "pointcloud_render.png")


def _published_occupancy(bag, grid) -> dict[int, np.ndarray]:
    """stamp -> (X, Y, Z) bool of the ``/mv4d_perception/output/occupancy`` clouds in ``bag``, decoded here
    (rosbags + read_points) and put back on ``grid`` from the voxel centres: independent of the demo's reader."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from mv4d_core.msgs.pointcloud2 import read_points

    ts = get_typestore(Stores.ROS2_HUMBLE)
    out = {}
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == "/mv4d_perception/output/occupancy"]
        for c, _t, raw in reader.messages(connections=conns):
            msg = ts.deserialize_cdr(raw, c.msgtype)
            pts = read_points(msg)
            xyz = np.stack([pts["x"], pts["y"], pts["z"]], -1).astype(np.float64)
            idx = np.floor((xyz - np.array(grid.range_min)) / np.array(grid.voxel_size)).astype(int)
            assert ((idx >= 0) & (idx < np.array(grid.shape))).all()
            occ = np.zeros(grid.shape, bool)
            occ[tuple(idx.T)] = True
            out[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = occ
    return out


def _geometric_iou(pairs) -> tuple[float, int]:
    """Occ3D-style IoU of summed counts over ``(pred occupied bool, GT labels)`` pairs, GT-unknown voxels
    left out; also the number of voxels scored."""
    tp = fp = fn = n = 0
    for pred, gt in pairs:
        known = gt != IGNORE
        occ = (gt != FREE) & known
        tp += int((pred & occ).sum())
        fp += int((pred & known & ~occ).sum())
        fn += int((~pred & occ).sum())
        n += int(known.sum())
    return tp / (tp + fp + fn), n


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def synthetic_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    rc = mv4d(["demo", "--out", str(out), "--random-init", "--frames", "3", "--no-real", "--render", "matplotlib"])
    assert rc == 0
    return out


def test_demo_writes_every_promised_file(synthetic_demo, capsys):
    from mv4d_core.data.rosbag_io import read_frames

    syn = synthetic_demo / "synthetic"
    for name in PANELS:
        w, h = _png_size(syn / name)
        assert w >= 400 and h >= 300, (name, w, h)
        assert (syn / name).stat().st_size > 10_000, name
    xyz, rgb = read_ply(syn / "predicted_points.ply")
    assert xyz.shape[0] > 1000 and xyz.shape == rgb.shape and np.isfinite(xyz).all()
    # The output bag holds the sensor topics and the outputs; rosbag_io reads the frames back.
    frames = list(read_frames(syn / "output_bag"))
    assert len(frames) == 3 and frames[0].num_cameras == 6
    for name in ("report.md", "index.html", "metrics.json"):
        assert (synthetic_demo / name).stat().st_size > 500, name
    html = (synthetic_demo / "index.html").read_text()
    assert html.count("data:image/png;base64,") == len(PANELS)  # self-contained: every panel inlined
    assert "<table>" in html


def test_metrics_cover_model_and_baselines(synthetic_demo):
    doc = json.loads((synthetic_demo / "metrics.json").read_text())
    (sec,) = doc["sections"]
    assert sec["title"] == "synthetic"
    bag_results = sec["results"]["from_output_bag"]
    methods = list(bag_results)
    assert methods[0] == "mv4d (untrained)"
    assert {"baseline: constant", "baseline: ground_plane", "baseline: all_free", "baseline: zero"} <= set(methods)
    model = bag_results["mv4d (untrained)"]
    assert model["depth"]["num_images"] == 3 * 6
    assert model["occupancy"]["num_frames"] == 3
    assert model["flow"]["all"]["num_points"] > 0
    # The model's IoU, recomputed here from the published clouds in the output bag and the exact GT.
    import torch

    from mv4d_core.data.synth import load_gt_sidecar
    from mv4d_core.models import ModelConfig

    grid = ModelConfig.from_dict(torch.load(synthetic_demo / "untrained_random_init.pt",
                                            weights_only=False)["model_config"]).grid
    published = _published_occupancy(synthetic_demo / "synthetic" / "output_bag", grid)
    gts = load_gt_sidecar(synthetic_demo / "synthetic")
    assert sorted(published) == sorted(gts) and all(g.occupancy_grid == grid for g in gts.values())
    iou, num_voxels = _geometric_iou((published[s], gts[s].occupancy) for s in sorted(gts))
    assert model["occupancy"]["iou"] == pytest.approx(iou, rel=1e-12)
    assert model["occupancy"]["num_voxels"] == num_voxels
    # Ground-slab baseline, recomputed: the voxel layer holding z = 0 occupied, everything else free.
    layer = np.zeros(grid.shape, bool)
    layer[:, :, int((0.0 - grid.range_min[2]) // grid.voxel_size[2])] = True
    slab_iou, _ = _geometric_iou((layer, gts[s].occupancy) for s in sorted(gts))
    assert bag_results["baseline: ground_slab"]["occupancy"]["iou"] == pytest.approx(slab_iou, rel=1e-12)
    # The untrained SDF head is the plane z = 0: it occupies the road layer and the layer below it, which the
    # synthetic GT marks unknown, so the model scores exactly the slab (0.33 here); a bag decoded one layer
    # off, or a field of the wrong sign, does not.
    assert iou == pytest.approx(slab_iou, rel=1e-12) and 0.1 < iou < 0.9
    # All-free scores the same voxels and frames as the model, with nothing found.
    free = bag_results["baseline: all_free"]["occupancy"]
    assert free["num_voxels"] == num_voxels and free["num_frames"] == 3 and free["recall"] == 0
    assert "`mv4d eval` scores the same way" in (synthetic_demo / "report.md").read_text()
    assert doc["untrained"] is True and "real-data branch: --no-real given" in doc["skipped"]


def _leaves(d, prefix=""):
    """``{"a/b/c": number}`` of a nested metrics dict (metrics.json stores NaN as null)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}/"))
        else:
            out[prefix + k] = float("nan") if v is None else v
    return out


def test_mv4d_eval_on_the_demo_drive_gives_the_numbers_scored_from_the_output_bag(synthetic_demo, tmp_path):
    """One scoring path: `mv4d eval` runs the pipeline itself, the demo decodes what `mv4d infer` wrote;
    both must score the same published outputs the same way."""
    out = tmp_path / "eval.json"
    assert mv4d(["eval", "--checkpoint", str(synthetic_demo / "untrained_random_init.pt"),
                 "--data", str(synthetic_demo / "synthetic"), "--json", str(out)]) == 0
    official = json.loads(out.read_text())["results"]
    (sec,) = json.loads((synthetic_demo / "metrics.json").read_text())["sections"]
    from_bag = sec["results"]["from_output_bag"]
    model = from_bag["mv4d (untrained)"]
    for group in ("depth", "depth_lidar", "occupancy", "occupancy_selfocc", "flow"):
        assert _leaves(official["model"][group]) == pytest.approx(_leaves(model[group]), rel=1e-9, nan_ok=True), group
    # the baselines too, except the constant depth: the demo fits it on a training seed, eval on the drive
    for name in ("baseline: ground_plane", "baseline: ground_slab", "baseline: all_free", "baseline: zero"):
        assert _leaves(official[name]) == pytest.approx(_leaves(from_bag[name]), rel=1e-9, nan_ok=True), name


def test_untrained_runs_are_labelled_everywhere(synthetic_demo):
    for name in ("report.md", "index.html"):
        assert "UNTRAINED" in (synthetic_demo / name).read_text(), name
    assert "UNTRAINED" in json.loads((synthetic_demo / "metrics.json").read_text())["title"]


def test_missing_weights_name_the_file_and_the_fix(tmp_path, monkeypatch, capsys):
    import mv4d_core.engines as engines

    monkeypatch.setattr(engines, "default_checkpoint", lambda: None)
    assert mv4d(["demo", "--out", str(tmp_path / "d"), "--no-real"]) == 2
    err = capsys.readouterr().err
    assert "weights" in err and "*.pt is missing" in err and "--checkpoint" in err and "--random-init" in err
    assert mv4d(["demo", "--out", str(tmp_path / "d2"), "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt does not exist" in capsys.readouterr().err


def test_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("user data")
    assert mv4d(["demo", "--out", str(tmp_path), "--random-init", "--no-real"]) == 2
    assert "not written by `mv4d demo`" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "user data"


def test_a_previous_demo_run_is_replaced_but_nothing_else(tmp_path):
    from mv4d_core.demo.command import MARKER, _prepare_out

    (tmp_path / MARKER).write_text("")
    (tmp_path / "synthetic" / "bag").mkdir(parents=True)
    (tmp_path / "report.md").write_text("old")
    (tmp_path / "notes.txt").write_text("user data")
    _prepare_out(tmp_path)
    assert not (tmp_path / "synthetic").exists() and not (tmp_path / "report.md").exists()
    assert (tmp_path / "notes.txt").read_text() == "user data" and (tmp_path / MARKER).is_file()


def test_readme_pictures_are_small_and_refused_for_untrained_models(synthetic_demo, tmp_path, capsys):
    from mv4d_core.demo.docs import MAX_BYTES, write_docs_pictures

    paths = write_docs_pictures(synthetic_demo / "synthetic", tmp_path / "docs")
    assert [p.name for p in paths] == ["demo_panels.png", "demo_pointcloud.png"]
    for p in paths:
        assert 10_000 < p.stat().st_size < MAX_BYTES and _png_size(p)[0] >= 400
    assert mv4d(["demo", "--out", str(tmp_path / "d"), "--random-init", "--docs", str(tmp_path / "docs2")]) == 2
    assert "--docs refused with --random-init" in capsys.readouterr().err
    assert not (tmp_path / "docs2").exists()


def test_published_clouds_scatter_back_onto_the_grid():
    rng = np.random.default_rng(0)
    prob = rng.random(TINY.shape).astype(np.float32)
    flow = rng.normal(size=TINY.shape + (3,)).astype(np.float32)
    occupied, p = scatter_occupancy(occupied_voxels(prob, TINY, 0.7), TINY)
    assert np.array_equal(occupied, prob >= 0.7)
    assert np.allclose(p[occupied], prob[occupied]) and not p[~occupied].any()
    f = scatter_flow(flow_points(prob, flow, TINY, 0.7), TINY)
    assert np.allclose(f[occupied], flow[occupied]) and not f[~occupied].any()


def test_bev_images_put_forward_up_and_left_left():
    labels = np.full(TINY.shape, FREE, np.uint8)
    occupied = np.zeros(TINY.shape, bool)
    ix, iy = TINY.metric_to_index(np.array([[30.0, 20.0, 0.0]]))[0, :2].astype(int)  # ahead and to the left
    occupied[ix, iy, 1:3] = True
    labels[ix, iy, 1], labels[ix, iy, 2] = ROAD, VEHICLE
    top = bev_top_labels(labels, occupied)
    assert top[ix, iy] == VEHICLE and (top == FREE).sum() == top.size - 1  # the highest voxel's class
    r, c = np.argwhere(bev_image(top) != FREE)[0]
    assert r < top.shape[0] // 2 and c < top.shape[1] // 2  # upper-left quadrant of the picture


def test_ply_round_trip_and_errors(tmp_path):
    xyz = np.arange(30, dtype=np.float32).reshape(10, 3)
    rgb = np.arange(30, dtype=np.uint8).reshape(10, 3)
    got_xyz, got_rgb = read_ply(write_ply(tmp_path / "a.ply", xyz, rgb, comment="two\nlines"))
    assert np.array_equal(got_xyz, xyz) and np.array_equal(got_rgb, rgb)
    with pytest.raises(ValueError, match="10 points but 3 colours"):
        write_ply(tmp_path / "b.ply", xyz, rgb[:3])
    (tmp_path / "c.ply").write_bytes(b"not a ply")
    with pytest.raises(ValueError, match="not a PLY"):
        read_ply(tmp_path / "c.ply")


@pytest.mark.slow
def test_open3d_renders_offscreen(tmp_path):
    pytest.importorskip("open3d", reason="open3d is installed best-effort (make .stamp-viz); the demo then renders "
                                         "with matplotlib")
    xyz = np.stack(np.meshgrid(np.linspace(0, 20, 40), np.linspace(-10, 10, 40), [0.0]), -1).reshape(-1, 3)
    rgb = np.tile(np.array([[200, 30, 30]], np.uint8), (len(xyz), 1))
    res = render_points(tmp_path / "r.png", [(xyz, rgb, 4.0)], backend="open3d")
    assert res.backend == "open3d" and res.note == ""
    import cv2

    img = cv2.imread(str(res.path))[..., ::-1]
    red = (img[..., 0] > 150) & (img[..., 1] < 100)
    assert red.sum() > 500  # the red points are visible ...
    assert (img.min(-1) > 240).mean() > 0.3  # ... on a white background


@pytest.mark.slow
@pytest.mark.data
def test_demo_on_real_nuscenes(nuscenes_minivis, tmp_path):
    out = tmp_path / "real"
    rc = mv4d(["demo", "--out", str(out), "--random-init", "--frames", "2", "--nuscenes", str(nuscenes_minivis),
               "--nuscenes-frames", "2", "--render", "none"])
    assert rc == 0
    nus = out / "nuscenes"
    for name in PANELS[:3]:
        assert _png_size(nus / name)[0] >= 400, name
    assert read_ply(nus / "predicted_points.ply")[0].shape[0] > 1000
    doc = json.loads((out / "metrics.json").read_text())
    sec = {s["title"]: s for s in doc["sections"]}["nuscenes"]
    model = sec["results"]["from_output_bag"]["mv4d (untrained)"]
    # Real data: depth against the projected LiDAR only; no occupancy / flow ground truth exists.
    assert model["depth_lidar"]["num_images"] == 2 * 6 and set(model) == {"depth_lidar"}
    assert "baseline: ground_plane" in sec["results"]["from_output_bag"]


def test_provenance_warns_when_demo_data_was_training_data(tmp_path):
    from mv4d_core.demo.command import checkpoint_provenance
    from mv4d_core.training.checkpoint import save_atomic

    ckpt = save_atomic({"step": 800, "config": {"data": {"synth_seeds": [0, 1, 1000],
                                                         "sources": ["../shared/data/nuscenes_minivis/data"]}}},
                       tmp_path / "c.pt")
    facts, warnings = checkpoint_provenance(ckpt, 1000, real_root=tmp_path / "nuscenes_minivis" / "data")
    assert "trained for 800 steps" in facts
    assert any("seed 1000 was a TRAINING seed" in w for w in warnings)
    assert any("trained on nuScenes" in w for w in warnings)
    facts, warnings = checkpoint_provenance(ckpt, 1001)
    assert warnings == []


def test_render_falls_back_to_matplotlib_with_a_reason(tmp_path, monkeypatch):
    import mv4d_core.demo.pointcloud_render as pr

    def broken(*_a, **_k):
        raise RuntimeError("no Vulkan device")

    monkeypatch.setattr(pr, "_render_open3d_subprocess", broken)
    xyz = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    res = render_points(tmp_path / "r.png", [(xyz, np.full((200, 3), 90, np.uint8), 3.0)])
    assert res.backend == "matplotlib" and "no Vulkan device" in res.note
    assert _png_size(res.path)[0] >= 400
    with pytest.raises(RuntimeError, match="no Vulkan device"):
        render_points(tmp_path / "r2.png", [(xyz, np.full((200, 3), 90, np.uint8), 3.0)], backend="open3d")


def test_real_data_branch_prefers_a_scene_the_weights_never_saw():
    from mv4d_core.demo.command import pick_real_scene

    assert pick_real_scene(["scene-0523", "scene-0916"], ["scene-0523"]) == "scene-0916"
    assert pick_real_scene(["scene-0523", "scene-0916"], []) == "scene-0523"
    assert pick_real_scene(["scene-0523"], ["scene-0523"]) == "scene-0523"
