"""Pinhole projection: optical frame, pixel centres at integers, explicit behind/outside handling."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mv4d_core.geometry.camera import R_BODY_OPTICAL, PinholeCamera, pixel_rays, project, unproject

CAM = PinholeCamera(np.array([[100.0, 0, 87.5], [0, 110.0, 47.5], [0, 0, 1]]), 176, 96)


def test_optical_axis_hits_principal_point():
    uv, depth, valid = CAM.project(np.array([[0.0, 0.0, 5.0]]))
    np.testing.assert_allclose(uv, [[87.5, 47.5]])
    assert depth[0] == 5.0 and valid[0]


def test_points_behind_camera_are_invalid_and_never_mirrored():
    uv, depth, valid = CAM.project(np.array([[0.1, 0.1, -5.0], [0.0, 0.0, 0.0]]))
    assert not valid.any()
    assert np.isnan(uv).all()


def test_out_of_image_points_are_invalid_but_keep_coordinates():
    uv, _, valid = CAM.project(np.array([[10.0, 0.0, 1.0]]))
    assert not valid[0] and uv[0, 0] > CAM.width


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 175), st.floats(0, 95), st.floats(0.1, 200))
def test_unproject_then_project_round_trips(u, v, d):
    p = CAM.unproject(np.array([[u, v]]), np.array([d]))
    uv, depth, valid = CAM.project(p)
    np.testing.assert_allclose(uv, [[u, v]], atol=1e-7)
    assert depth[0] == pytest.approx(d) and valid[0]


def test_resize_keeps_pixel_centres_consistent():
    small = CAM.resized(88, 48)
    p = CAM.unproject(np.array([[40.0, 30.0]]), np.array([10.0]))
    uv_big, _, _ = CAM.project(p)
    uv_small, _, _ = small.project(p)
    # A point at pixel centre u in the big image is at (u + 0.5) / 2 - 0.5 in the half-size image.
    np.testing.assert_allclose(uv_small, (uv_big + 0.5) * 0.5 - 0.5, atol=1e-9)


def test_crop_shifts_principal_point_and_rejects_bad_windows():
    c = CAM.cropped(10, 5, 100, 60)
    assert (c.width, c.height) == (100, 60)
    assert c.cx == pytest.approx(77.5) and c.cy == pytest.approx(42.5)
    with pytest.raises(ValueError, match="leaves"):
        CAM.cropped(100, 0, 100, 10)


def test_invalid_intrinsics_are_rejected():
    with pytest.raises(ValueError, match="focal"):
        PinholeCamera(np.diag([0.0, 1.0, 1.0]), 10, 10)
    with pytest.raises(ValueError, match="3x3"):
        PinholeCamera(np.eye(4), 10, 10)


def test_torch_matches_numpy_batched():
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(2, 50, 3)) + [0, 0, 3]
    K = np.stack([CAM.K, CAM.resized(88, 48).K])
    uv_n, d_n, v_n = project(K, pts, 176, 96)
    uv_t, d_t, v_t = project(torch.from_numpy(K), torch.from_numpy(pts), 176, 96)
    np.testing.assert_allclose(uv_t.numpy(), uv_n, atol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(v_t.numpy(), v_n)
    back = unproject(torch.from_numpy(K), uv_t, d_t)
    ok = torch.from_numpy(pts[..., 2] > 1e-3)
    np.testing.assert_allclose(back[ok].numpy(), pts[ok.numpy()], atol=1e-9)


def test_rays_have_unit_z_and_optical_to_body_rotation_is_rep103():
    r = pixel_rays(CAM.K, np.array([[87.5, 47.5]]))
    np.testing.assert_allclose(r, [[0, 0, 1]])
    # optical z (forward) is body x; optical x (right) is body -y; optical y (down) is body -z
    np.testing.assert_allclose(R_BODY_OPTICAL @ [0, 0, 1], [1, 0, 0])
    np.testing.assert_allclose(R_BODY_OPTICAL @ [1, 0, 0], [0, -1, 0])
    np.testing.assert_allclose(R_BODY_OPTICAL @ [0, 1, 0], [0, 0, -1])
