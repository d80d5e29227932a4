"""Time the photometric loss (forward + backward) at the tiny training size.

Writes JSON with the absolute time and the ratio to a baseline measured in the same run: the bare
bilinear lookup (``grid_sample``) of the same number of samples, the floor any reprojection loss pays.

Usage: ``python -m bench.bench_losses [--out out/bench/losses.json] [--rays 32] [--samples 64]``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from bench.common import best_of, write_result
from mv4d_core.losses.photometric import PhotometricLoss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/bench/losses.json")
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--rays", type=int, default=32, help="lattice side (rays per camera = rays^2)")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=176)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    V, r, S, H, W = a.views, a.rays, a.samples, a.height, a.width
    K = torch.tensor([[W / 2, 0, (W - 1) / 2], [0, W / 2, (H - 1) / 2], [0, 0, 1.0]]).expand(V, 3, 3)
    T_base_cam = torch.eye(4).expand(V, 4, 4)
    xy = torch.rand(V, r, r, S, 2, generator=g) * 2 - 1
    z = torch.rand(V, r, r, S, 1, generator=g) * 30 + 2
    points = torch.cat([xy * z, z], -1).requires_grad_(True)
    weights = torch.rand(V, r, r, S, generator=g).requires_grad_(True)
    target = torch.rand(V, r, r, 3, generator=g)
    adj = torch.rand(2, V, 3, H, W, generator=g)
    T_adj = torch.eye(4).expand(2, 4, 4).clone()
    T_adj[0, 2, 3], T_adj[1, 2, 3] = -0.5, 0.5
    uv = torch.rand(V, r, r, 2, generator=g) * torch.tensor([W - 1.0, H - 1.0])
    loss = PhotometricLoss()

    def photometric():
        points.grad = weights.grad = None
        loss(points, weights, target, adj, K, T_base_cam, T_adj, ray_uv=uv).backward()

    grid = (torch.rand(V, 1, r * r * S, 2, generator=g) * 2 - 1).requires_grad_(True)

    def gather_only():
        grid.grad = None
        sum(F.grid_sample(adj[a], grid, align_corners=True).sum() for a in range(2)).backward()

    photometric(), gather_only()  # warm-up
    t_loss, t_base = best_of(photometric, a.repeats), best_of(gather_only, a.repeats)
    res = {"views": V, "rays_per_view": r * r, "samples_per_ray": S, "adjacent_frames": 2,
           "torch_threads": torch.get_num_threads(), "photometric_fwd_bwd_s": t_loss,
           "baseline_grid_sample_fwd_bwd_s": t_base, "ratio_vs_baseline": t_loss / t_base}
    write_result(a.out, res)


if __name__ == "__main__":
    main()
