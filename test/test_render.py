"""Renderer specification: rays, sampling, field lookup, NeuS alpha, compositing, fused op, SDF derivatives."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mv4d_core.geometry.camera import R_BODY_OPTICAL, project
from mv4d_core.geometry.transforms import invert_transform, transform_points
from mv4d_core.geometry.voxel_grid import TINY, VoxelGridSpec
from mv4d_core.models.temporal import voxel_centers_torch
from mv4d_core.render import (RayBundle, Sharpness, lattice_rays, composite, eikonal_residual, fused_neus_composite, neus_alpha,
                              pixel_lattice, ray_aabb, rays_from_cameras, render_rays, sample_volume, sdf_gradient,
                              sdf_second_derivatives, stratified_samples, triton_available)

F64 = torch.float64
SMALL = VoxelGridSpec((-2.0, -2.0, -1.0), (2.0, 2.0, 1.0), (0.5, 0.5, 0.5))     # 8 x 8 x 4


def camera_pose(position, yaw_rad=0.0, dtype=F64) -> torch.Tensor:
    """T_base_cam of an optical camera at ``position`` looking along base_link +x rotated by ``yaw``."""
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    Rz = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    T = torch.eye(4, dtype=dtype)
    T[:3, :3] = Rz @ torch.tensor(R_BODY_OPTICAL, dtype=dtype)
    T[:3, 3] = torch.tensor(position, dtype=dtype)
    return T


def K_of(f=40.0, w=64, h=48, dtype=F64) -> torch.Tensor:
    return torch.tensor([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]], dtype=dtype)


# --- rays and samples -----------------------------------------------------------------------------------------

def test_rays_pass_through_their_pixels_and_z_per_t_gives_optical_depth():
    K = K_of()
    T = camera_pose((1.0, 2.0, 1.5), yaw_rad=0.7)
    uv = torch.tensor([[[3.0, 5.0], [40.0, 30.0], [31.5, 23.5]]], dtype=F64)[None]     # (1, 1, 3, 2)
    rays = rays_from_cameras(K[None, None], T[None, None], uv)
    assert rays.origins.shape == (1, 3, 3) and rays.directions.shape == (1, 3, 3)
    torch.testing.assert_close(rays.directions.norm(dim=-1), torch.ones(1, 3, dtype=F64))
    t = torch.tensor([2.0, 7.0, 11.0], dtype=F64)
    pts_base = rays.origins[0] + t[:, None] * rays.directions[0]
    pts_cam = transform_points(invert_transform(T), pts_base)
    uv_back, depth, valid = project(K, pts_cam, 64, 48)
    assert bool(valid.all())
    torch.testing.assert_close(uv_back, uv[0, 0])
    torch.testing.assert_close(depth, t * rays.z_per_t[0])
    # the principal-point ray is the optical axis: range == optical depth
    assert rays.z_per_t[0, 2].item() == pytest.approx(1.0)


def test_rays_of_an_adjacent_frame_camera_start_at_its_pose_in_the_current_frame():
    K = K_of()
    T_base_cam = camera_pose((1.5, 0.0, 1.6))
    T_cur_prev = torch.eye(4, dtype=F64)
    T_cur_prev[0, 3] = -3.0                    # the previous ego pose was 3 m behind
    uv = torch.tensor([[[[31.5, 23.5]]]], dtype=F64)
    rays = rays_from_cameras(K[None, None], (T_cur_prev @ T_base_cam)[None, None], uv)
    torch.testing.assert_close(rays.origins[0, 0], torch.tensor([-1.5, 0.0, 1.6], dtype=F64))
    torch.testing.assert_close(rays.directions[0, 0], torch.tensor([1.0, 0.0, 0.0], dtype=F64))


def test_jittered_lattice_is_a_regular_grid_inside_the_image():
    g = torch.Generator().manual_seed(3)
    lat = pixel_lattice(96, 176, 32, 32, jitter=True, generator=g)
    assert lat.shape == (32, 32, 2)
    du = lat[:, 1:, 0] - lat[:, :-1, 0]
    dv = lat[1:, :, 1] - lat[:-1, :, 1]
    torch.testing.assert_close(du, torch.full_like(du, 176 / 32))
    torch.testing.assert_close(dv, torch.full_like(dv, 96 / 32))
    assert lat[..., 0].min() >= -0.5 and lat[..., 0].max() < 175.5
    assert lat[..., 1].min() >= -0.5 and lat[..., 1].max() < 95.5
    other = pixel_lattice(96, 176, 32, 32, jitter=True, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(lat, other)


def test_stratified_samples_stay_between_near_plane_and_box_exit():
    o = torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 0.5], [0.0, 0.0, 50.0]], dtype=F64)
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, -0.8], [1.0, 0.0, 0.0]], dtype=F64)
    t, deltas, hit = stratified_samples(o, d, TINY, 32, near_m=0.5, jitter=True,
                                        generator=torch.Generator().manual_seed(0))
    assert hit.tolist() == [True, True, False]
    _, t_exit = ray_aabb(o, d, TINY.range_min, TINY.range_max)
    assert t_exit[0].item() == pytest.approx(40.0)
    assert t_exit[1].item() == pytest.approx(1.5 / 0.8)         # leaves through the floor z = -1
    for r in range(2):
        assert t[r].min() >= 0.5 and t[r].max() <= t_exit[r]
        assert bool((t[r, 1:] > t[r, :-1]).all())
        assert deltas[r].sum().item() == pytest.approx(t_exit[r].item() - 0.5)
    assert deltas[2].abs().max().item() == 0.0                 # a miss contributes nothing


# --- field lookup -------------------------------------------------------------------------------------------

def test_gather_and_grid_sample_lookups_agree_and_reproduce_linear_fields():
    g = torch.Generator().manual_seed(0)
    vol = torch.randn(2, 3, *SMALL.shape, generator=g, dtype=F64)
    pts = (torch.rand(2, 50, 3, generator=g, dtype=F64) * 5.0 - 2.5) * torch.tensor([1.0, 1.0, 0.5], dtype=F64)
    a = sample_volume(vol, pts, SMALL, "grid_sample")
    b = sample_volume(vol, pts, SMALL, "gather")
    torch.testing.assert_close(a, b)
    # a linear field is reproduced exactly inside the centre hull (trilinear interpolation is exact)
    c = voxel_centers_torch(SMALL, dtype=F64)
    lin = (2.0 * c[..., 0] - c[..., 1] + 3.0 * c[..., 2])[None, None]
    inner = torch.rand(1, 40, 3, generator=g, dtype=F64) * torch.tensor([3.0, 3.0, 1.0], dtype=F64) \
        - torch.tensor([1.5, 1.5, 0.5], dtype=F64)
    expect = 2.0 * inner[..., 0] - inner[..., 1] + 3.0 * inner[..., 2]
    torch.testing.assert_close(sample_volume(lin, inner, SMALL, "gather")[..., 0], expect)


def test_gather_lookup_supports_double_backward():
    vol = torch.randn(1, 1, *SMALL.shape, dtype=F64, requires_grad=True)
    pts = torch.tensor([[[0.3, -0.2, 0.1], [1.1, 0.7, -0.3]]], dtype=F64, requires_grad=True)
    val = sample_volume(vol, pts, SMALL, "gather").sum()
    (g_pts,) = torch.autograd.grad(val, pts, create_graph=True)
    (g_vol,) = torch.autograd.grad(g_pts.pow(2).sum(), vol)
    assert torch.isfinite(g_vol).all() and g_vol.abs().sum() > 0


# --- alpha, compositing, fused op ---------------------------------------------------------------------------

def test_sharpness_is_exp_of_ten_v():
    assert Sharpness(0.1)().item() == pytest.approx(math.e)
    assert Sharpness(0.3)().item() == pytest.approx(math.exp(3.0))


def test_sharpness_floor_keeps_a_minimum_and_the_gradient():
    s = Sharpness(0.1, min_inv_s=2.0)
    assert s().item() == pytest.approx(2.0 + math.e)
    with torch.no_grad():
        s.v.fill_(-5.0)                                   # a free sharpness would be exp(-50) ~ 0
    value = s()
    assert value.item() == pytest.approx(2.0, abs=1e-12)
    value.backward()
    assert s.v.grad is not None and s.v.grad.item() > 0   # still learnable: it can rise again
    with pytest.raises(ValueError, match="min_inv_s"):
        Sharpness(0.1, min_inv_s=-1.0)


def test_composite_weights_sum_to_at_most_one_and_follow_transmittance():
    alpha = torch.tensor([[0.2, 0.5, 1.0, 0.3]], dtype=F64)
    t = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=F64)
    w, depth, _, opacity = composite(alpha, t)
    expect = torch.tensor([[0.2, 0.8 * 0.5, 0.8 * 0.5 * 1.0, 0.0]], dtype=F64)
    torch.testing.assert_close(w, expect, atol=1e-9, rtol=0)
    assert opacity.item() == pytest.approx(1.0, abs=1e-9)
    assert depth.item() == pytest.approx(0.2 * 1 + 0.4 * 2 + 0.4 * 3, abs=1e-9)


def _random_sections(R=5, S=12, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    sdf = torch.linspace(1.5, -0.8, S, dtype=F64).expand(R, S) + 0.3 * torch.randn(R, S, generator=g, dtype=F64)
    d = torch.full((R, S), 0.2, dtype=F64)
    slope = -torch.rand(R, S, generator=g, dtype=F64)
    s_prev, s_next = sdf - slope * d / 2, sdf + slope * d / 2
    t = torch.arange(S, dtype=F64).expand(R, S) * 0.2 + 1.0
    vals = torch.rand(R, S, C, generator=g, dtype=F64)
    inv_s = torch.tensor(3.0, dtype=F64)
    return s_prev, s_next, inv_s, t, vals


def _reference_op(s_prev, s_next, inv_s, t, vals):
    return composite(neus_alpha(s_prev, s_next, inv_s), t, vals)


def test_reference_alpha_and_composite_pass_gradcheck():
    args = [x.clone().requires_grad_(True) for x in _random_sections(R=3, S=8, C=2)]
    assert torch.autograd.gradcheck(_reference_op, args, eps=1e-6, atol=1e-6)


def test_cpu_fused_op_matches_reference_forward_and_backward_float64():
    inputs = _random_sections(R=6, S=16, C=4, seed=1)
    a = [x.clone().requires_grad_(True) for x in inputs]
    b = [x.clone().requires_grad_(True) for x in inputs]
    ref = _reference_op(*a)
    fus = fused_neus_composite(*b, backend="torch")
    for r, f in zip(ref, fus):
        torch.testing.assert_close(f, r)
    g = torch.Generator().manual_seed(5)
    upstream = [torch.randn(x.shape, generator=g, dtype=F64) for x in ref]
    torch.autograd.backward(ref, upstream)
    torch.autograd.backward(fus, upstream)
    for xa, xb in zip(a, b):
        torch.testing.assert_close(xb.grad, xa.grad)


def test_cpu_fused_op_under_autocast_computes_in_its_inputs_precision():
    # Mixed-precision training wraps the step in autocast; the op must not mix a bf16 forward with
    # fp32 saved inputs in its backward.
    inputs = [x.float() for x in _random_sections(R=6, S=16, C=4, seed=3)]
    grads = []
    for enabled in (False, True):
        xs = [x.clone().requires_grad_(True) for x in inputs]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            out = fused_neus_composite(*xs, backend="torch")
            sum(o.sum() for o in out).backward()
        assert all(o.dtype == torch.float32 for o in out)
        grads.append([x.grad for x in xs])
    for g_plain, g_autocast in zip(*grads):
        torch.testing.assert_close(g_autocast, g_plain)


def test_cpu_fused_op_passes_gradcheck():
    args = [x.clone().requires_grad_(True) for x in _random_sections(R=3, S=8, C=2, seed=2)]
    fn = lambda *xs: fused_neus_composite(*xs, backend="torch")  # noqa: E731
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)


def test_render_rays_gradcheck_through_field_and_sharpness():
    g = torch.Generator().manual_seed(0)
    c = voxel_centers_torch(SMALL, dtype=F64)
    base = (c[..., 2] + 0.1 * torch.randn(SMALL.shape, generator=g, dtype=F64))[None, None]
    colour = torch.rand(1, 2, *SMALL.shape, generator=g, dtype=F64)
    uv = torch.tensor([[[[20.0, 30.0], [40.0, 40.0], [10.0, 44.0]]]], dtype=F64)
    rays = rays_from_cameras(K_of()[None, None], camera_pose((-1.9, 0.1, 0.8))[None, None], uv)

    def fn(sdf, col, v, backend):
        field = torch.cat([sdf, col], 1)
        out = render_rays(field, SMALL, rays, torch.exp(10 * v), num_samples=10, near_m=0.1, jitter=False,
                          cos_anneal=0.5, backend=backend)
        return out.depth_m, out.rgb, out.opacity

    v = torch.tensor(0.08, dtype=F64)
    for backend in ("reference", "fused"):
        args = [base.clone().requires_grad_(True), colour.clone().requires_grad_(True), v.clone().requires_grad_(True)]
        assert torch.autograd.gradcheck(lambda a, b, vv: fn(a, b, vv, backend), args, eps=1e-6, atol=1e-5)


def test_rendered_depth_of_analytic_plane_and_sphere_is_within_one_percent():
    """SDF volume of min(ground plane z=0, sphere) on a 0.1 m grid; a camera 1.5 m above the ground."""
    grid = VoxelGridSpec((-4.0, -4.0, -1.0), (4.0, 4.0, 3.0), (0.1, 0.1, 0.1))
    c = voxel_centers_torch(grid, dtype=F64)
    center, radius = torch.tensor([2.0, 0.5, 1.0], dtype=F64), 0.8
    field = torch.minimum(c[..., 2], (c - center).norm(dim=-1) - radius)[None, None]
    uv = pixel_lattice(48, 64, 12, 16, jitter=False, dtype=F64).reshape(1, 1, -1, 2)
    rays = rays_from_cameras(K_of()[None, None], camera_pose((-2.0, 0.0, 1.5))[None, None], uv)
    out = render_rays(field, grid, rays, 200.0, num_samples=256, near_m=0.5, jitter=True,
                      generator=torch.Generator().manual_seed(0))
    o, d = rays.origins[0], rays.directions[0]
    t_plane = torch.where(d[:, 2] < 0, -o[:, 2] / d[:, 2], torch.full_like(o[:, 0], math.inf))
    oc = o - center
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - radius ** 2)
    t_sphere = torch.where(disc > 0, -b - disc.clamp_min(0).sqrt(), torch.full_like(b, math.inf))
    t_true = torch.minimum(t_plane, t_sphere)
    _, t_exit = ray_aabb(o, d, grid.range_min, grid.range_max)
    seen = t_true < t_exit - 0.3                                   # surface well inside the box
    assert seen.sum() >= 50 and bool((t_sphere[seen] < t_plane[seen]).any())
    rel = (out.depth_t[0] - t_true).abs() / t_true
    assert rel[seen].max().item() < 0.01
    assert out.opacity[0, seen].min().item() > 0.99
    fused = render_rays(field, grid, rays, 200.0, num_samples=256, near_m=0.5, jitter=True,
                        generator=torch.Generator().manual_seed(0), backend="fused")
    torch.testing.assert_close(fused.depth_m, out.depth_m)


# --- SDF finite differences ---------------------------------------------------------------------------------

def test_finite_difference_gradient_and_hessian_of_analytic_fields():
    c = voxel_centers_torch(SMALL, dtype=F64)
    lin = (0.6 * c[..., 0] - 0.8 * c[..., 2])[None]
    g = sdf_gradient(lin, SMALL.voxel_size)
    inner = (slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
    torch.testing.assert_close(g[:, 0][inner], torch.full_like(g[:, 0][inner], 0.6))
    torch.testing.assert_close(g[:, 1][inner], torch.zeros_like(g[:, 1][inner]))
    torch.testing.assert_close(g[:, 2][inner], torch.full_like(g[:, 2][inner], -0.8))
    assert eikonal_residual(lin, SMALL.voxel_size)[inner].abs().max().item() < 1e-12
    quad = (c[..., 0] ** 2 + 2 * c[..., 1] ** 2 - c[..., 2] ** 2)[None]
    h = sdf_second_derivatives(quad, SMALL.voxel_size)
    for axis, value in enumerate((2.0, 4.0, -2.0)):
        torch.testing.assert_close(h[:, axis][inner], torch.full_like(h[:, axis][inner], value))


def test_finite_difference_eikonal_of_a_sphere_sdf_is_near_zero_and_differentiable():
    grid = VoxelGridSpec((-2.0, -2.0, -2.0), (2.0, 2.0, 2.0), (0.1, 0.1, 0.1))
    c = voxel_centers_torch(grid, dtype=F64)
    sdf = ((c.norm(dim=-1) - 1.0)[None]).requires_grad_(True)
    res = eikonal_residual(sdf, grid.voxel_size)
    shell = ((c.norm(dim=-1) - 1.0).abs() < 0.5)[None]
    assert res[shell].abs().max().item() < 0.02
    res.pow(2).mean().backward()
    assert torch.isfinite(sdf.grad).all()


# --- GPU: Triton kernel vs reference (skips without CUDA) ---------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not triton_available("cuda"), reason="needs CUDA and triton")
@pytest.mark.parametrize("S,C", [(64, 3), (96, 20), (7, 1)])
def test_triton_fused_op_matches_reference_on_gpu(S, C):
    inputs = [x.float().cuda() for x in _random_sections(R=300, S=S, C=C, seed=S)]
    a = [x.clone().requires_grad_(True) for x in inputs]
    b = [x.clone().requires_grad_(True) for x in inputs]
    ref = _reference_op(*a)
    fus = fused_neus_composite(*b, backend="triton")
    for r, f in zip(ref, fus):
        torch.testing.assert_close(f, r, atol=2e-5, rtol=1e-4)
    upstream = [torch.randn_like(x) for x in ref]
    torch.autograd.backward(ref, upstream)
    torch.autograd.backward(fus, upstream)
    for xa, xb in zip(a, b):
        torch.testing.assert_close(xb.grad, xa.grad, atol=1e-4, rtol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_render_rays_on_gpu_matches_cpu():
    g = torch.Generator().manual_seed(0)
    c = voxel_centers_torch(TINY)
    field = torch.cat([c[..., 2][None, None], torch.rand(1, 3, *TINY.shape, generator=g)], 1)
    uv = pixel_lattice(96, 176, 16, 16, jitter=False).reshape(1, 1, -1, 2)
    rays = rays_from_cameras(K_of(80.0, 176, 96, torch.float32)[None, None],
                             camera_pose((1.0, 0.0, 1.6), dtype=torch.float32)[None, None], uv)
    cpu = render_rays(field, TINY, rays, 20.0, num_samples=64, jitter=False)
    rays_gpu = RayBundle(*(x.cuda() for x in (rays.origins, rays.directions, rays.z_per_t, rays.uv, rays.camera_index)))
    gpu = render_rays(field.cuda(), TINY, rays_gpu, 20.0, num_samples=64, jitter=False, backend="fused")
    torch.testing.assert_close(gpu.depth_m.cpu(), cpu.depth_m, atol=1e-3, rtol=1e-4)


def test_lattice_rays_render_a_model_style_batch():
    """(B, N) cameras -> lattice rays -> render the untrained model's flat-ground field."""
    B, N = 2, 3
    K = K_of(90.0, 176, 96, torch.float32).expand(B, N, 3, 3)
    T = torch.stack([camera_pose((0.0, 0.0, 1.6), yaw_rad=2 * math.pi * i / N, dtype=torch.float32)
                     for i in range(N)]).expand(B, N, 4, 4)
    rays, uv = lattice_rays(K, T, 96, 176, 8, 16, jitter=True, generator=torch.Generator().manual_seed(0))
    assert rays.shape == (B, N * 8 * 16) and uv.shape == (B, N, 8, 16, 2)
    c = voxel_centers_torch(TINY)
    field = torch.cat([c[..., 2][None, None], torch.full((1, 3, *TINY.shape), 0.25)], 1).expand(B, -1, -1, -1, -1)
    out = render_rays(field, TINY, rays, 50.0, num_samples=96, jitter=False)
    assert out.depth_m.shape == (B, N * 8 * 16) and out.rgb.shape == (B, N * 8 * 16, 3)
    # rays below the horizon see the ground plane z = 0 at optical depth 1.6 * f / (v - cy)
    v = uv[..., 1].reshape(B, -1)
    below = v > 47.5 + 20
    expect = 1.6 * 90.0 / (v - 47.5)
    rel = ((out.depth_m - expect).abs() / expect)[below]
    assert below.sum() > 0 and rel.max().item() < 0.03
    torch.testing.assert_close(out.rgb[below], torch.full_like(out.rgb[below], 0.25), atol=0.01, rtol=0)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_kernels_match_reference_in_the_triton_cpu_interpreter():
    """Runs the real Triton kernels through ``TRITON_INTERPRET=1`` (numpy on CPU) in a subprocess,
    so kernel logic is checked on machines without a GPU whenever triton is installed."""
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from mv4d_core.render import fused as F\n"
        "from test_render import _random_sections, _reference_op\n"
        "for R, S, C in [(20, 64, 3), (8, 7, 1)]:\n"
        "    xs = [x.float() for x in _random_sections(R=R, S=S, C=C, seed=S)]\n"
        "    a = [x.clone().requires_grad_(True) for x in xs]\n"
        "    b = [x.clone().requires_grad_(True) for x in xs]\n"
        "    ref, fus = _reference_op(*a), F._FusedCompositeTriton.apply(*b)\n"
        "    for r, f in zip(ref, fus):\n"
        "        torch.testing.assert_close(f, r, atol=2e-5, rtol=1e-4)\n"
        "    up = [torch.randn_like(x) for x in ref]\n"
        "    torch.autograd.backward(ref, up)\n"
        "    torch.autograd.backward(fus, up)\n"
        "    for xa, xb in zip(a, b):\n"
        "        torch.testing.assert_close(xb.grad, xa.grad, atol=1e-4, rtol=1e-3)\n"
        "print('OK')\n")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
