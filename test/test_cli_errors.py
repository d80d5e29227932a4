"""Every user error of the ``mv4d`` command ends in one line naming the cause and the fix, exit 2.

Truncated sqlite3 and MCAP bags, topics that are not in the bag, cameras the engine does not take,
missing calibration (no CameraInfo, no extrinsics), unreadable checkpoints; and a bag without an
ego pose is said so once and processed without temporal fusion. Commands run in-process through
``mv4d_core.cli.main`` (what the ``mv4d`` console script calls); none may raise.
"""

from __future__ import annotations

import shutil

import pytest
import yaml

from mv4d_core.cli import main as mv4d
from mv4d_core.data.rosbag_io import write_frames
from mv4d_core.data.synth import generate_sequence
from mv4d_core.data.topic_map import TopicMap


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_errors")
    frames = generate_sequence(2, seed=5)
    cams = frames[0].camera_names
    out = {"root": root}
    for storage in ("sqlite3", "mcap"):
        good = root / f"good_{storage}"
        write_frames(good, frames, storage=storage)
        out[f"good_{storage}"] = good
        # An interrupted recording / partial copy: the storage file cut in half.
        cut = root / f"truncated_{storage}"
        shutil.copytree(good, cut)
        (data,) = [p for p in cut.iterdir() if p.suffix in (".db3", ".mcap")]
        raw = data.read_bytes()
        data.write_bytes(raw[: len(raw) // 2])
        out[f"truncated_{storage}"] = cut
    write_frames(root / "no_ego_pose", frames, topic_map=TopicMap.default(cams).with_(tf="/ego_tf"))
    write_frames(root / "no_extrinsics", frames, topic_map=TopicMap.default(cams).with_(tf_static="/other_static"))
    no_info = TopicMap(tuple(c if i else type(c)(c.name, c.image, "/nowhere/camera_info", c.frame_id)
                             for i, c in enumerate(TopicMap.default(cams).cameras)))
    (root / "no_info_map.yaml").write_text(yaml.safe_dump(no_info.to_dict()))
    unknown = TopicMap.default(cams).to_dict()
    unknown["cameras"][1]["image"] = "/front_camera/image_raw"
    (root / "unknown_topic_map.yaml").write_text(yaml.safe_dump(unknown))
    (root / "garbage.pt").write_text("not a checkpoint")
    return out


def run(capsys, *argv) -> tuple[int, str]:
    rc = mv4d([str(a) for a in argv])
    return rc, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("command", ["info", "infer", "eval"])
def test_truncated_bags(bags, capsys, tmp_path, storage, command):
    bag = bags[f"truncated_{storage}"]
    argv = {"info": ["info", bag], "infer": ["infer", "--in", bag, "--out", tmp_path / "out"],
            "eval": ["eval", "--data", bag, "--json", tmp_path / "e.json"]}[command]
    rc, err = run(capsys, *argv)
    line = one_line(err)
    assert rc == 2 and line.startswith(f"mv4d {command}: {bag}")
    assert "truncated or corrupt" in line and "copy it again, or repair it" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["info", "infer", "eval"])
def test_topics_that_are_not_in_the_bag(bags, capsys, tmp_path, command):
    bag, tm = bags["good_sqlite3"], bags["root"] / "unknown_topic_map.yaml"
    argv = {"info": ["info", bag, "--topic-map", tm],
            "infer": ["infer", "--in", bag, "--out", tmp_path / "out", "--topic-map", tm],
            "eval": ["eval", "--data", bag, "--json", tmp_path / "e.json", "--topic-map", tm]}[command]
    rc, err = run(capsys, *argv)
    line = one_line(err)
    assert rc == 2 and "/front_camera/image_raw" in line and "not in the bag" in line and "topic map" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["infer", "eval"])
def test_missing_calibration(bags, capsys, tmp_path, command):
    root = bags["root"]
    for bag, tm, cause in ((root / "no_extrinsics", None, "the extrinsics are missing"),
                           (bags["good_sqlite3"], root / "no_info_map.yaml", "the intrinsics (CameraInfo)")):
        extra = ["--topic-map", tm] if tm else []
        argv = {"infer": ["infer", "--in", bag, "--out", tmp_path / "out", *extra],
                "eval": ["eval", "--data", bag, "--json", tmp_path / "e.json", *extra]}[command]
        rc, err = run(capsys, *argv)
        line = one_line(err)
        assert rc == 2 and cause in line, line
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["infer", "eval", "export"])
def test_unreadable_checkpoint(bags, capsys, tmp_path, command):
    ckpt = bags["root"] / "garbage.pt"
    argv = {"infer": ["infer", "--checkpoint", ckpt, "--in", bags["good_sqlite3"], "--out", tmp_path / "out"],
            "eval": ["eval", "--checkpoint", ckpt, "--data", bags["good_sqlite3"], "--json", tmp_path / "e.json"],
            "export": ["export", "--checkpoint", ckpt, "--onnx", tmp_path / "m.onnx"]}[command]
    rc, err = run(capsys, *argv)
    line = one_line(err)
    assert f"{ckpt} cannot be read" in line
    if command == "export":
        # mv4d_core/export/command.py reports its own errors (one line, exit 1).
        assert rc in (1, 2)
    else:
        assert rc == 2 and "mv4d train" in line          # ... and the fix
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["infer", "eval"])
def test_cameras_the_engine_does_not_take(bags, capsys, tmp_path, monkeypatch, command):
    # An exported engine built for a fixed camera count (EngineSpec.num_cameras) against a 6-camera bag.
    import dataclasses

    import mv4d_core.engines as engines
    from mv4d_core.engines.torch_engine import TorchEngine
    from mv4d_core.models import ModelConfig

    def three_camera_engine(*args, **kwargs):
        e = TorchEngine.from_model_config(ModelConfig.tiny())
        e.spec = dataclasses.replace(e.spec, num_cameras=3, name="three_cameras.onnx")
        return e

    monkeypatch.setattr(engines, "create_engine", three_camera_engine)
    argv = {"infer": ["infer", "--in", bags["good_sqlite3"], "--out", tmp_path / "out"],
            "eval": ["eval", "--data", bags["good_sqlite3"], "--json", tmp_path / "e.json",
                     "--camera-only-checkpoint", "none"]}[command]
    rc, err = run(capsys, *argv)
    line = one_line(err)
    assert rc == 2 and line.startswith(f"mv4d {command}: parameter 'camera_names': ") and "three_cameras" in line
    assert ("6 cameras configured but the engine" in line) if command == "infer" else ("pick 3 with --cameras" in line)
    # eval names the fix: score with the cameras the engine takes.
    rc, err = run(capsys, "eval", "--data", bags["good_sqlite3"], "--json", tmp_path / "e.json", "--cameras", "CAM_X")
    assert rc == 2 and "--cameras ['CAM_X'] not in the data" in one_line(err)
    assert not (tmp_path / "out").exists()


def test_lidar_only_scoring_of_a_camera_only_model(bags, capsys, tmp_path):
    from mv4d_core.engines.checkpoint import CAMERA_ONLY_WEIGHTS, WEIGHTS_DIR

    rc, err = run(capsys, "eval", "--checkpoint", WEIGHTS_DIR / CAMERA_ONLY_WEIGHTS, "--data", bags["good_sqlite3"],
                  "--json", tmp_path / "e.json", "--lidar-only")
    assert rc == 2 and "--lidar-only needs a LiDAR fusion model" in one_line(err)


def test_bag_without_ego_pose_says_so_once_and_runs_without_temporal_fusion(bags, capsys, tmp_path):
    import torch

    from mv4d_core.models import ModelConfig, build_model
    from mv4d_core.training.checkpoint import save_atomic

    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    save_atomic({"model_config": cfg.to_dict(), "model": build_model(cfg).state_dict()}, tmp_path / "m.pt")
    rc = mv4d(["infer", "--checkpoint", str(tmp_path / "m.pt"), "--in", str(bags["root"] / "no_ego_pose"),
               "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert rc == 0
    said = [ln for ln in captured.err.splitlines() if "no ego pose" in ln]
    assert len(said) == 1 and "without temporal fusion" in said[0]
    assert "temporal fusion off (no ego pose in the bag)" in captured.out
    assert "ego pose from none" in captured.out
    # A topic map naming the frames the bag does have: the pose is found (world_frame from the map).
    tm = TopicMap.default(generate_sequence(1, seed=5)[0].camera_names).with_(tf="/ego_tf", world_frame="map")
    tm.save_yaml(tmp_path / "tm.yaml")
    rc = mv4d(["infer", "--checkpoint", str(tmp_path / "m.pt"), "--in", str(bags["root"] / "no_ego_pose"),
               "--out", str(tmp_path / "out2"), "--topic-map", str(tmp_path / "tm.yaml")])
    captured = capsys.readouterr()
    assert rc == 0 and "no ego pose" not in captured.err and "ego pose from tf" in captured.out
    # info says where the pose comes from, and --world-frame changes where it looks.
    rc = mv4d(["info", str(bags["good_sqlite3"])])
    assert rc == 0 and "ego pose: map <- base_link from tf" in capsys.readouterr().out
    rc = mv4d(["info", str(bags["good_sqlite3"]), "--world-frame", "odom"])
    out = capsys.readouterr().out
    assert rc == 0 and "ego pose: none -- no ego pose odom <- base_link" in out and "['map']" in out


def test_unknown_bag_path_and_existing_output(bags, capsys, tmp_path):
    rc, err = run(capsys, "info", tmp_path / "nope")
    assert rc == 2 and "does not exist" in one_line(err)
    (tmp_path / "exists").mkdir()
    rc, err = run(capsys, "infer", "--in", bags["good_sqlite3"], "--out", tmp_path / "exists")
    assert rc == 2 and "already exists" in one_line(err)
    assert (tmp_path / "exists").is_dir()            # a user's folder is never removed


def test_training_on_a_bag_without_ego_pose_refuses_in_one_line(bags, capsys, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: {size: tiny}\ntrainer: {max_steps: 1}\n")
    rc, err = run(capsys, "train", "--config", recipe, "--data", bags["root"] / "no_ego_pose", "--out", tmp_path / "run",
                  "--no-progress")
    line = one_line(err)
    assert rc == 2 and line.startswith("mv4d train: ") and "have no ego pose" in line and "topic map" in line
    assert not (tmp_path / "run" / "last.pt").exists()
