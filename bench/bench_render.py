"""Renderer benchmark: samples/s of the reference vs the fused compositing path (forward and
forward+backward) at the tiny training scale, and autograd memory per 1M samples.

Usage: ``python -m bench.bench_render [--out out/bench/render.json] [--rays 1024] [--samples 64]``.
Workload: TINY field (1, 4, 100, 100, 8) (SDF + colour), 6 cameras x ``rays`` lattice rays x ``samples``.
Memory method: bytes of tensors autograd saves for backward during one forward (counted with
``torch.autograd.graph.saved_tensors_hooks``, deduplicated by storage) -> per 1M samples; this is the
activation memory the backend keeps alive, independent of allocator caching. The Triton kernel is
timed only where CUDA and Triton are present (GPU section skipped otherwise).
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

from bench.common import round_robin, write_result


def build_workload(num_rays: int, device="cpu"):
    from mv4d_core.geometry.camera import R_BODY_OPTICAL
    from mv4d_core.geometry.voxel_grid import TINY
    from mv4d_core.models.temporal import voxel_centers_torch
    from mv4d_core.render import pixel_lattice, rays_from_cameras

    g = torch.Generator().manual_seed(0)
    c = voxel_centers_torch(TINY)
    sdf = c[..., 2] + 0.3 * torch.randn(TINY.shape, generator=g)
    field = torch.cat([sdf[None, None], torch.rand(1, 3, *TINY.shape, generator=g)], 1).to(device)
    side = int(math.sqrt(num_rays))
    uv = pixel_lattice(96, 176, side, num_rays // side, jitter=False)
    Ks, Ts = [], []
    for i in range(6):
        yaw = 2 * math.pi * i / 6
        T = torch.eye(4)
        T[:3, :3] = torch.tensor([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0],
                                  [0, 0, 1.0]]) @ torch.tensor(R_BODY_OPTICAL, dtype=torch.float32)
        T[:3, 3] = torch.tensor([0.5 * math.cos(yaw), 0.5 * math.sin(yaw), 1.6])
        Ts.append(T)
        Ks.append(torch.tensor([[90.0, 0, 87.5], [0, 90.0, 47.5], [0, 0, 1]]))
    rays = rays_from_cameras(torch.stack(Ks)[None], torch.stack(Ts)[None], uv.reshape(1, 1, -1, 2).expand(1, 6, -1, -1))
    from mv4d_core.render.rays import RayBundle

    rays = RayBundle(*(x.to(device) for x in (rays.origins, rays.directions, rays.z_per_t, rays.uv, rays.camera_index)))
    return field, TINY, rays


def saved_bytes(fn) -> int:
    seen = {}

    def pack(t):
        try:
            key = (t.untyped_storage().data_ptr(), t.device.type)
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except Exception:  # noqa: BLE001 - tensors without storage (e.g. wrapped)
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/bench/render.json")
    ap.add_argument("--rays", type=int, default=1024, help="rays per camera (6 cameras)")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    from mv4d_core.render import render_rays, triton_available

    BACKENDS = ("reference", "fused")

    def run(device: str, grad: bool, sync=None) -> dict:
        """Time both backends on the same workload, alternating them each repeat (fair under CPU contention)."""
        field, grid, rays = build_workload(args.rays, device)
        field.requires_grad_(grad)
        inv_s = torch.tensor(20.0, device=device, requires_grad=grad)

        def once(backend):
            out = render_rays(field, grid, rays, inv_s, num_samples=args.samples, jitter=False, backend=backend)
            if grad:
                (out.depth_m.mean() + out.rgb.mean()).backward()
            return out

        times = round_robin({b: (lambda b=b: once(b)) for b in BACKENDS}, args.repeats, warmup=1, sync=sync)
        n = rays.origins.shape[1] * args.samples
        res = {}
        for b in BACKENDS:
            med, best = statistics.median(times[b]), min(times[b])
            res[b] = {"median_ms": round(med * 1e3, 1), "min_ms": round(best * 1e3, 1),
                      "msamples_per_s_at_min": round(n / best / 1e6, 3)}
            if grad:
                nbytes = saved_bytes(lambda: render_rays(field, grid, rays, inv_s, num_samples=args.samples,
                                                         jitter=False, backend=b))
                res[b]["autograd_saved_mb_per_1m_samples"] = round(nbytes / 2 ** 20 / (n / 1e6), 1)
        res["fused_speedup_at_min"] = round(res["reference"]["min_ms"] / res["fused"]["min_ms"], 3)
        return res

    def composite_only(device: str) -> dict:
        """Memory autograd keeps for alpha + compositing alone, (R, S) = (6 * rays, samples), 3 colour channels."""
        from mv4d_core.render import composite, fused_neus_composite, neus_alpha

        R, S = 6 * args.rays, args.samples
        g = torch.Generator().manual_seed(0)
        xs = [torch.randn(R, S, generator=g) for _ in range(2)] + [torch.tensor(20.0)] + \
             [torch.rand(R, S, generator=g), torch.rand(R, S, 3, generator=g)]
        xs = [x.to(device).requires_grad_(True) for x in xs]
        ref = saved_bytes(lambda: composite(neus_alpha(xs[0], xs[1], xs[2]), xs[3], xs[4]))
        fus = saved_bytes(lambda: fused_neus_composite(*xs))
        per = (R * S) / 1e6
        return {"reference_mb_per_1m_samples": round(ref / 2 ** 20 / per, 1),
                "fused_mb_per_1m_samples": round(fus / 2 ** 20 / per, 1),
                "note": "fused saves only its inputs (which the caller's graph holds anyway)"}

    n_samples = 6 * args.rays * args.samples
    result = {"workload": {"cameras": 6, "rays_per_camera": args.rays, "samples_per_ray": args.samples,
                           "total_samples": n_samples, "grid": [100, 100, 8], "channels": 4},
              "torch_threads": torch.get_num_threads(),
              "cpu": {"forward": run("cpu", False), "forward_backward": run("cpu", True),
                      "alpha_composite_memory": composite_only("cpu")}}
    if torch.cuda.is_available():
        sync = torch.cuda.synchronize
        result["gpu"] = {"device": torch.cuda.get_device_name(0), "triton": triton_available("cuda"),
                         "forward": run("cuda", False, sync), "forward_backward": run("cuda", True, sync)}
    else:
        result["gpu"] = {"skipped": "no CUDA device"}
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
