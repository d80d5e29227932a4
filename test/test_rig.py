"""Rig files: documented YAML format, round trips, errors that name the field, CameraInfo + TF."""

from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from mv4d_core.geometry.rig import NUSCENES_CAMERAS, Rig, RigError
from mv4d_core.geometry.transforms import transform_from_quat

GOOD = {
    "base_frame": "base_link",
    "cameras": [
        {"name": "CAM_FRONT", "frame_id": "cam_front_optical", "width": 1600, "height": 900,
         "K": [1266.4, 0.0, 816.3, 0.0, 1266.4, 491.5, 0.0, 0.0, 1.0],
         "T_base_cam": {"translation": [1.7, 0.0, 1.5], "rotation_wxyz": [0.5, -0.5, 0.5, -0.5]}},
        {"name": "CAM_BACK", "width": 1600, "height": 900, "K": {"fx": 800, "fy": 800, "cx": 800, "cy": 450},
         "T_base_cam": {"translation": [-1.0, 0.0, 1.5], "rotation_wxyz": [0.5, 0.5, -0.5, -0.5]}},
    ],
    "lidar": {"name": "LIDAR_TOP", "T_base_lidar": {"translation": [0.9, 0, 1.8], "rotation_wxyz": [1, 0, 0, 0]}},
}


def test_yaml_round_trip(tmp_path):
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    rig = Rig.from_yaml(path)
    assert rig.camera_names == ["CAM_FRONT", "CAM_BACK"]
    assert rig.camera("CAM_FRONT").frame_id == "cam_front_optical"
    assert rig.camera("CAM_BACK").frame_id == "CAM_BACK"
    assert rig.lidar is not None and rig.lidar.T_base_lidar[2, 3] == pytest.approx(1.8)
    rig.save_yaml(tmp_path / "again.yaml")
    again = Rig.from_yaml(tmp_path / "again.yaml")
    np.testing.assert_allclose(again.extrinsics(), rig.extrinsics(), atol=1e-12)
    np.testing.assert_allclose(again.intrinsics(), rig.intrinsics())


def test_front_camera_looks_forward():
    rig = Rig.from_dict(GOOD)
    R = rig.camera("CAM_FRONT").T_base_cam[:3, :3]
    # optical +z must be base_link +x for a forward camera
    np.testing.assert_allclose(R @ [0, 0, 1], [1, 0, 0], atol=1e-9)


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["cameras"][1].pop("K"), r"cameras\[1\]\.K: missing"),
    (lambda d: d["cameras"][0].update(width=-3), r"cameras\[0\]\.width"),
    (lambda d: d["cameras"][0].update(K=[1, 2, 3]), r"cameras\[0\]\.K: expected 9 numbers"),
    (lambda d: d["cameras"][0]["T_base_cam"].update(rotation_wxyz=[1, 1, 1, 1]), r"rotation_wxyz: quaternion norm"),
    (lambda d: d["cameras"][0]["T_base_cam"].update(translation=[0, "x", 0]), r"T_base_cam\.translation"),
    (lambda d: d["cameras"][1].update(name="CAM_FRONT"), r"duplicate camera names"),
    (lambda d: d.update(cameras=[]), r"cameras: expected a non-empty list"),
    (lambda d: d["lidar"].pop("T_base_lidar"), r"lidar\.T_base_lidar: missing"),
    (lambda d: d["cameras"][0].update(K=[0, 0, 1, 0, 5, 1, 0, 0, 1]), r"cameras\[0\]\.K: .*focal"),
])
def test_bad_rig_errors_name_the_field(mutate, field):
    import copy

    d = copy.deepcopy(GOOD)
    mutate(d)
    with pytest.raises(RigError, match=field):
        Rig.from_dict(d)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(RigError, match="does not exist"):
        Rig.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras: [unclosed")
    with pytest.raises(RigError, match="not valid YAML"):
        Rig.from_yaml(bad)


def _info(frame, k, w=640, h=480):
    return SimpleNamespace(header=SimpleNamespace(frame_id=frame), k=k, d=[0.0] * 5, width=w, height=h)


def test_from_camera_infos_and_tf():
    T = transform_from_quat(np.array([0.5, -0.5, 0.5, -0.5]), np.array([1.0, 0, 1.5]))
    infos = {"CAM_FRONT": _info("front_optical", [500, 0, 320, 0, 500, 240, 0, 0, 1])}
    rig = Rig.from_camera_infos(infos, {"front_optical": T, "lidar": np.eye(4)}, lidar_frame="lidar")
    assert rig.camera("CAM_FRONT").camera.fx == 500
    np.testing.assert_allclose(rig.camera("CAM_FRONT").T_base_cam, T)
    with pytest.raises(RigError, match="no transform base_link <- 'other'"):
        Rig.from_camera_infos({"X": _info("other", [500, 0, 320, 0, 500, 240, 0, 0, 1])}, {})


def test_resized_rig_and_nuscenes_order():
    rig = Rig.from_dict(GOOD).resized(176, 99)
    assert rig.camera("CAM_FRONT").camera.width == 176
    assert NUSCENES_CAMERAS[1] == "CAM_FRONT" and len(NUSCENES_CAMERAS) == 6
