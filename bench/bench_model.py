"""Model benchmark: tiny forward latency (CPU), per-stage split, peak memory of a tiny training step,
the cost of the LiDAR branch and of motion (fusion vs camera-only tiny forward, and fusion with vs
without the previous sweep and the flow gate, each pair timed round-robin in the same run), and the
base config on GPU when CUDA is present (skipped otherwise).

Usage: ``python -m bench.bench_model [--out out/bench/model.json] [--repeats 5] [--base-cpu]``.
Memory method (CPU): peak resident set size (``ru_maxrss``) of this process after one training step
minus the resident size right before it (model, inputs and imports already loaded); measured first so
no earlier work has raised the high-water mark. On CUDA: ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import round_robin, timed, write_result


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_inputs(cfg, batch=1, device="cpu"):
    from mv4d_core.geometry.camera import R_BODY_OPTICAL
    from mv4d_core.models import ModelInputs

    Ks, Ts = [], []
    f = 0.5 * cfg.image_width / math.tan(math.radians(35))
    for i in range(cfg.num_cameras):
        yaw = 2 * math.pi * i / cfg.num_cameras
        T = np.eye(4)
        T[:3, :3] = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]]) \
            @ R_BODY_OPTICAL
        T[:3, 3] = (0.5 * math.cos(yaw), 0.5 * math.sin(yaw), 1.6)
        Ks.append([[f, 0, (cfg.image_width - 1) / 2], [0, f, (cfg.image_height - 1) / 2], [0, 0, 1]])
        Ts.append(T)
    images = torch.rand(batch, cfg.num_cameras, 3, cfg.image_height, cfg.image_width)
    K = torch.tensor(Ks, dtype=torch.float32).expand(batch, -1, -1, -1).clone()
    T = torch.tensor(np.array(Ts), dtype=torch.float32).expand(batch, -1, -1, -1).clone()
    return ModelInputs(images, K, T).to(device)


def with_lidar(inputs, cfg, seed: int = 0):
    """``inputs`` plus random LiDAR inputs of ``cfg``'s shapes (the cost does not depend on the values)."""
    from dataclasses import replace

    from mv4d_core.models.lidar_inputs import volume_channels

    g = torch.Generator().manual_seed(seed)
    B, N, _, H, W = inputs.images.shape
    vol = torch.rand(B, volume_channels(cfg.lidar.previous_sweeps), *cfg.grid.shape, generator=g)
    depth = torch.rand(B, N, 3, H, W, generator=g) * 30.0
    return replace(inputs, lidar_volume=vol, lidar_depth=depth, lidar_valid=torch.ones(B))


def fusion_cost(repeats: int) -> dict:
    """Median eval forward (ms) of the tiny camera-only, fusion and fusion-without-motion models, measured
    round-robin, the two ratios the fusion and motion targets are stated in, and the LiDAR
    pre-processing of one synthetic sweep (volume + per-camera sparse depth and completion)."""
    from dataclasses import replace
    from pathlib import Path

    from mv4d_core.data.synth import generate_sequence
    from mv4d_core.models import ModelConfig, build_model
    from mv4d_core.models.inputs import resize_cameras
    from mv4d_core.models.lidar_inputs import Sweep, build_lidar_inputs, lidar_origin
    from mv4d_core.training.config import TrainConfig

    cam = ModelConfig.tiny()
    recipe = Path(__file__).resolve().parents[1] / "training" / "tiny_fusion.yaml"
    fusion = TrainConfig.from_yaml(recipe).model           # the shipped fusion weights' configuration
    static = fusion.replace(lidar=replace(fusion.lidar, previous_sweeps=0), flow_gate=False)
    models, feeds = {}, {}
    for name, cfg in (("camera_only", cam), ("fusion", fusion), ("fusion_without_motion", static)):
        torch.manual_seed(0)
        models[name] = build_model(cfg).eval()
        base = make_inputs(cfg)
        feeds[name] = with_lidar(base, cfg) if cfg.lidar.enabled else base
    with torch.no_grad():
        times = round_robin({k: (lambda k=k: models[k](feeds[k])) for k in models}, repeats, warmup=1)
    med = {k: round(statistics.median(v) * 1e3, 1) for k, v in times.items()}

    f0, f1 = generate_sequence(2, seed=1)
    h, w = fusion.image_height, fusion.image_width
    _, K = resize_cameras(f1.images, f1.intrinsics, h, w)
    sweeps = [Sweep(f.lidar_xyz, f.lidar_intensity, f.T_world_base, f.stamp_ns) for f in (f0, f1)]
    origin = lidar_origin(f1.T_base_lidar)
    pre = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        build_lidar_inputs(sweeps[1], sweeps[:1], origin, K, f1.T_base_cam, (h, w), fusion.lidar, fusion.grid)
        pre.append(time.perf_counter() - t0)
    return {"median_ms": med, "fusion_over_camera_only": round(med["fusion"] / med["camera_only"], 3),
            "motion_over_fusion_without_motion": round(med["fusion"] / med["fusion_without_motion"], 3),
            "lidar_preprocess_ms": round(statistics.median(pre) * 1e3, 1),
            "lidar_points": int(len(f1.lidar_xyz)),
            "note": f"fusion = {recipe.name}'s model (previous_sweeps {fusion.lidar.previous_sweeps}, full-resolution "
                    "depth head, flow gate); without motion = no previous sweep, no gate; forward only, the LiDAR "
                    "pre-processing (numpy, in the pipeline) is lidar_preprocess_ms"}


def train_step(model, inputs):
    out = model(inputs)
    loss = out.depth_m.mean() + out.sdf.abs().mean() + out.rgb.mean() + out.flow_mps.abs().mean()
    loss.backward()
    return out


def stage_times(model, inputs, repeats: int) -> dict:
    """Median wall time per top-level module (forward hooks), ms."""
    names = ["backbone", "neck", "depth_net", "lift", "temporal", "neck3d", "heads"]
    acc = {n: [] for n in names}
    start = {}
    hooks = []
    for n in names:
        mod = getattr(model, n)
        if mod is None:
            continue
        hooks.append(mod.register_forward_pre_hook(lambda m, i, n=n: start.__setitem__(n, time.perf_counter())))
        hooks.append(mod.register_forward_hook(lambda m, i, o, n=n: acc[n].append(time.perf_counter() - start[n])))
    with torch.no_grad():
        for _ in range(repeats):
            model(inputs)
    for h in hooks:
        h.remove()
    return {n: round(statistics.median(v) * 1e3, 2) for n, v in acc.items() if v}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/bench/model.json")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--base-cpu", action="store_true",
                    help="also time one no-grad base forward on CPU (~1.7 GB peak RSS, a few seconds)")
    args = ap.parse_args(argv)

    from mv4d_core.models import ModelConfig, build_model, count_parameters

    torch.manual_seed(0)
    result = {"torch_threads": torch.get_num_threads()}
    cfg = ModelConfig.tiny()
    model = build_model(cfg).train()
    inputs = make_inputs(cfg)
    # --- peak memory of one training step (measured first; see module docstring) ---
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    train_step(model, inputs)
    step_s = time.perf_counter() - t0
    result["tiny_train_step"] = {
        "first_step_s": round(step_s, 3),
        "peak_rss_increase_mb": round(_max_rss_mb() - rss_before, 1),
        "rss_before_mb": round(rss_before, 1),
        "method": "ru_maxrss after step - VmRSS before step (CPU, batch 1 x 6 cams)",
    }
    model.zero_grad(set_to_none=True)
    step_times = timed(lambda: (train_step(model, inputs), model.zero_grad(set_to_none=True)), args.repeats)
    result["tiny_train_step"]["median_s"] = round(statistics.median(step_times), 3)
    # --- tiny forward latency (eval, no grad) ---
    model.eval()
    with torch.no_grad():
        model(inputs)                                    # warm-up
        fwd = timed(lambda: model(inputs), args.repeats)
    result["tiny_forward_cpu"] = {
        "params": count_parameters(model), "batch": 1, "cameras": cfg.num_cameras,
        "image": [cfg.image_height, cfg.image_width], "grid": list(cfg.grid.shape),
        "median_ms": round(statistics.median(fwd) * 1e3, 1), "min_ms": round(min(fwd) * 1e3, 1),
        "stage_median_ms": stage_times(model, inputs, max(2, args.repeats // 2)),
    }
    result["tiny_fusion_cost_cpu"] = fusion_cost(max(5, args.repeats))
    if args.base_cpu:
        bcfg = ModelConfig.base()
        bmodel = build_model(bcfg).eval()
        binputs = make_inputs(bcfg)
        with torch.no_grad():
            t0 = time.perf_counter()
            bmodel(binputs)
            first = time.perf_counter() - t0
        result["base_forward_cpu"] = {"params": count_parameters(bmodel), "first_call_s": round(first, 2),
                                      "process_peak_rss_mb": round(_max_rss_mb(), 1)}
    # --- base config on GPU ---
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        bcfg = ModelConfig.base()
        bmodel = build_model(bcfg).to(dev).eval()
        binputs = make_inputs(bcfg, device=dev)
        sync = torch.cuda.synchronize
        with torch.no_grad():
            bmodel(binputs)
            bfwd = timed(lambda: bmodel(binputs), args.repeats, sync)
        bmodel.train()
        torch.cuda.reset_peak_memory_stats()
        train_step(bmodel, binputs)
        sync()
        result["base_gpu"] = {
            "device": torch.cuda.get_device_name(0), "params": count_parameters(bmodel),
            "forward_median_ms": round(statistics.median(bfwd) * 1e3, 1),
            "train_step_peak_mem_mb": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1),
        }
    else:
        result["base_gpu"] = {"skipped": "no CUDA device"}
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
