"""One prepared device check: verify and time every GPU path of mv4d in a single run (<= 8 min on one H200).

Usage::

    python -m bench.gpu_check [--out out/bench/gpu_check.json] [--reduced] [--parts a,b,...]
                              [--budget-s 450] [--no-compile]

It writes ONE JSON file (``--out``) and prints a readable table. Every part runs in its own
``try``/``except``: a part records its numbers, ``{"skipped": "<reason>"}`` when a dependency is
missing (no CUDA, no Triton, a reduced run), or ``{"error": "<type>: <message>"}`` when it breaks, so
one failure never hides the others. The top of the JSON names the device, driver, torch / CUDA /
Triton / TensorRT versions, the seconds each part took and whether the run was reduced.

Parts (JSON key: what it measures, and how):

``equivalence`` (a)
    The fused NeuS alpha + compositing op (Triton kernels on CUDA when Triton imports, else the torch
    ``autograd.Function``) against the PyTorch reference (``neus_alpha`` + ``composite``): outputs AND
    input gradients (fixed random upstream gradients). Two levels: the op alone on random ray sections
    (every input cast to float32 / bf16 / fp16), and ``render_rays(..., backend="fused" | "reference")``
    on the ``bench_render`` workload (gradients w.r.t. the field and the sharpness; float32, then bf16 /
    fp16 ``torch.autocast`` around it, recording which dtype reached the compositing). Per tensor, the
    fused result and the reference in the same precision are both compared with the truth, the
    reference in float64 on the same rounded inputs: ``max |x - truth| / max |truth|``; the direct
    fused-vs-reference difference is recorded too. A tensor passes when the fused error is within the
    tolerance of its dtype (:data:`TOLERANCES`, stored in the JSON: float32 1e-4 for outputs, 1e-3 for
    gradients; bf16 5e-2 / 8e-2; fp16 1e-2 / 1.5e-2) or no worse than
    twice the reference's own error (scalar reductions such as the sharpness gradient carry the
    rounding error of their precision whichever path computes them).
``render_timing`` (b)
    Fused vs reference, forward (no grad) and forward + backward, at 1M, 2M and 4M samples (rays x 64
    samples per ray), for the compositing op alone and for the whole ``render_rays``. GPU timing uses
    CUDA events around each call (``torch.cuda.synchronize`` before each and after the timed span);
    backends run round-robin. Bandwidth: bytes the compositing must move at least (each input read
    once, each output written once: forward reads ``s_prev, s_next, t`` (R, S) and ``values`` (R, S, C),
    writes ``weights`` (R, S) and ``depth, opacity`` (R,), ``values_out`` (R, C); backward reads those
    inputs plus the upstream gradients and writes the five input gradients) / median elapsed, against
    the GPU's peak HBM bandwidth (table :data:`PEAK_HBM_TB_S`, null for unknown GPUs) and against a
    measured device-to-device copy. The same byte count is used for the reference (its effective
    bandwidth; it really moves more). Peak CUDA memory of one forward + backward per backend.
``model_latency`` (c)
    Eval forward latency of the tiny and base models, batch 1 x 6 cameras (``bench_model.make_inputs``),
    float32 and bf16 / fp16 autocast, with a per-stage split (CUDA events, or wall time on CPU, in
    forward hooks on the top-level modules); the tiny LiDAR fusion model (random LiDAR inputs); and,
    on CUDA, optional variants (each skipped or recorded as an error on its own): a CUDA graph of the
    bf16 forward, ``cudnn.benchmark``, and ``torch.compile`` of the base bf16 forward (only while the
    time budget allows; compile time recorded).
``pipeline`` (d)
    ``PerceptionPipeline.process(frame)`` with ``TorchEngine.from_model_config`` (base, then tiny) on 6 random 1600x900
    frames (synthetic-rig extrinsics, ``PinholeCamera.from_fov`` intrinsics, the ego moving 1 m per
    frame at 10 Hz so temporal fusion runs): median pre-processing / inference / post-processing ms from
    ``pipeline.timings``, wall time of ``process`` and the end-to-end rate. Pre-processing resizes on the
    CPU with OpenCV (recorded as a finding; the library is not changed here).
``train_step`` (e)
    One base-config ``SelfSupervisedStep`` (the recipe's full self-supervised losses on a synthetic
    camera-only triplet) + backward + AdamW step, under the Trainer's autocast rule (bf16 on CUDA):
    step time and ``torch.cuda.max_memory_allocated``; plus the simple step of ``bench_model.train_step``
    (forward + a simple loss + backward) for comparison (in reduced runs only if the full step fails).
``targets`` (f)
    The project's targets as ``{"target", "measured", "pass"}``: fused >= 5x reference forward +
    backward, >= 50 % of the bandwidth roofline, base forward <= 20 ms at 6 x 256x704 in reduced
    precision, pipeline pre + post <= 3 ms, end to end >= 30 Hz. ``pass`` is null where not measured,
    and in reduced / CPU runs (their sizes are not the targets' sizes).

``--reduced`` runs the same code paths with tiny sizes (20k samples, the tiny model, 2 frames of 6 x
180x320, one or two repeats) on CPU when CUDA is absent, in well under a minute on a loaded 2-core
machine (the test ``test/test_gpu_check.py`` runs it). Without ``--reduced`` and without CUDA the script
still runs: the equivalence check runs at the small sizes, everything GPU-only is skipped and says so.

Execution order differs from the report order: ``model_latency`` runs last, so that its CUDA-graph
capture and ``torch.compile`` (the calls most likely to break the CUDA context or overrun) cannot
hide the other parts, and compile only starts while ``--budget-s`` leaves room for it.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch

#: Peak HBM bandwidth (TB/s) by device name: (regex on ``torch.cuda.get_device_name``, TB/s, part).
#: Most specific first (``GH200`` before ``H200``, ``L40S`` before ``L4``). Vendor data-sheet values.
PEAK_HBM_TB_S: tuple[tuple[str, float, str], ...] = (
    (r"GH200", 4.0, "GH200 480GB HBM3 (the 144GB HBM3e part: 4.9 TB/s)"),
    (r"B200", 8.0, "B200 HBM3e"),
    (r"H200", 4.8, "H200 SXM / NVL HBM3e"),
    (r"H100.*NVL", 3.9, "H100 NVL"),
    (r"H100.*PCIe", 2.0, "H100 PCIe"),
    (r"H100", 3.35, "H100 SXM5 HBM3"),
    (r"A100.*80GB.*PCIe", 1.935, "A100 80GB PCIe"),
    (r"A100.*80GB", 2.039, "A100 80GB SXM4"),
    (r"A100", 1.555, "A100 40GB"),
    (r"L40S|L40\b", 0.864, "L40 / L40S GDDR6"),
    (r"\bL4\b", 0.3, "L4 GDDR6"),
    (r"A10G", 0.6, "A10G GDDR6"),
    (r"V100", 0.9, "V100 HBM2"),
    (r"RTX 4090", 1.008, "RTX 4090 GDDR6X"),
)

#: Equivalence tolerances, ``max |fused - truth| / max |truth|`` per tensor (outputs and gradients), the
#: truth being the reference in float64 on the same rounded inputs. float32: both paths compute in
#: float32. bf16 / fp16: the inputs are rounded to that dtype; the CPU fused op then computes in it
#: (8 / 11 mantissa bits, errors compound through the 64-sample transmittance product), the Triton
#: kernels compute in float32 and round only their outputs.
#: Gradients are looser than outputs: they include reductions over all R x S samples (the sharpness
#: gradient is one scalar sum with cancellation), as test_render's GPU test allows (rtol 1e-3).
TOLERANCES = {"float32": {"outputs": 1e-4, "gradients": 1e-3},
              "bfloat16": {"outputs": 5e-2, "gradients": 8e-2},
              "float16": {"outputs": 1e-2, "gradients": 1.5e-2}}
#: ... or the fused error may be at most this factor times the reference's own error in that precision.
NO_WORSE_FACTOR = 2.0

#: The project's targets (part f).
TARGETS = {"fused_speedup_fwd_bwd": 5.0, "roofline_fraction": 0.5, "base_forward_ms": 20.0,
           "pipeline_pre_post_ms": 3.0, "end_to_end_hz": 30.0}

SAMPLES_PER_RAY = 64
COLOUR_CHANNELS = 3
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PARTS = ("equivalence", "render_timing", "model_latency", "pipeline", "train_step", "targets")


class Skip(Exception):
    """Raised inside a part (or a sub-measurement) to record ``{"skipped": reason}``."""


# ---------------------------------------------------------------------------------------------- context

class Context:
    """What every part needs: the device, the run's sizes, a clock and the time budget."""

    def __init__(self, reduced: bool, budget_s: float, compile_ok: bool) -> None:
        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.reduced = reduced
        # Small sizes for the CPU-capable parts when there is no GPU (a full-size run on CPU would only
        # measure how slow the CPU is).
        self.small = reduced or not self.cuda
        self.compile_ok = compile_ok
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        # Repeats: GPU calls are cheap and noisy at the tail, CPU ones slow; medians either way.
        self.warmup = 1 if reduced else 3
        self.repeats = 3 if reduced else 20
        # A tiny-model forward takes ~0.2-1.5 s on a loaded 2-core CPU: reduced runs time one call
        # without warm-up (the number only shows the path runs) plus the stage-split call.
        self.model_warmup = 0 if reduced else 3
        self.model_repeats = 1 if reduced else 20

    def time_left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def round_robin(self, fns: dict[str, Callable[[], object]], repeats: int | None = None,
                    warmup: int | None = None) -> dict[str, list[float]]:
        """Milliseconds of each call of each callable, the callables taking turns each round (load from
        other processes, clocks and caches hit all of them alike). CUDA: events recorded around the call
        on the current stream, synchronised before each call and after the timed span; CPU: wall time."""
        repeats = self.repeats if repeats is None else repeats
        warmup = self.warmup if warmup is None else warmup
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        self.sync()
        out: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                if self.cuda:
                    torch.cuda.synchronize()
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    fn()
                    end.record()
                    torch.cuda.synchronize()
                    out[k].append(start.elapsed_time(end))
                else:
                    t = time.perf_counter()
                    fn()
                    out[k].append((time.perf_counter() - t) * 1e3)
        return out


def _stats(ms: list[float]) -> dict:
    return {"median_ms": _r(statistics.median(ms)), "min_ms": _r(min(ms)), "n": len(ms)}


def _r(x, digits: int = 4):
    """Round to ``digits`` significant digits (JSON stays readable); None / non-finite -> None."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _autocast(ctx: Context, dtype_name: str, **kw):
    if dtype_name == "float32":
        return nullcontext()
    return torch.autocast(ctx.device.type, dtype=DTYPES[dtype_name], **kw)


def _lowp_dtypes(ctx: Context) -> list[str]:
    # CPU autocast in fp16 is slow and not a deployment path; CUDA runs both reduced precisions.
    return ["bfloat16", "float16"] if ctx.cuda else ["bfloat16"]


# ---------------------------------------------------------------------------------------------- environment

def environment(ctx: Context) -> dict:
    """Device, driver and library versions (nvidia-smi when present: torch does not report the driver)."""
    from bench.common import machine

    env = {"machine": machine(), "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
           "cuda_available": ctx.cuda, "device": str(ctx.device), "torch_threads": torch.get_num_threads(),
           "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
           "cudnn_benchmark": torch.backends.cudnn.benchmark}
    try:
        import triton

        env["triton"] = triton.__version__
    except Exception as e:  # noqa: BLE001 - absent or broken
        env["triton"] = None
        env["triton_note"] = f"not importable ({type(e).__name__})"
    try:
        import tensorrt

        env["tensorrt"] = tensorrt.__version__
    except Exception:  # noqa: BLE001
        env["tensorrt"] = None
    if ctx.cuda:
        p = torch.cuda.get_device_properties(0)
        env.update(device_name=torch.cuda.get_device_name(0), compute_capability=f"{p.major}.{p.minor}",
                   sm_count=p.multi_processor_count, memory_gib=_r(p.total_memory / 2 ** 30),
                   cudnn=torch.backends.cudnn.version())
    else:
        env["device_name"] = "cpu"
    env["driver_version"] = None
    if shutil.which("nvidia-smi"):
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.memory",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            first = q.stdout.strip().splitlines()[0] if q.stdout.strip() else ""
            env["nvidia_smi"] = first or q.stderr.strip()[:200]
            if first:
                env["driver_version"] = first.split(",")[1].strip()
        except Exception as e:  # noqa: BLE001
            env["nvidia_smi"] = f"failed: {type(e).__name__}: {e}"
    else:
        env["nvidia_smi"] = "not on PATH"
    return env


def peak_bandwidth(device_name: str) -> tuple[float | None, str]:
    """Peak HBM bandwidth (bytes/s) of ``device_name`` from :data:`PEAK_HBM_TB_S`, and which entry matched."""
    for pattern, tb_s, what in PEAK_HBM_TB_S:
        if re.search(pattern, device_name):
            return tb_s * 1e12, f"{what}: {tb_s} TB/s (data sheet)"
    return None, f"{device_name!r} is not in the peak-bandwidth table (bench/gpu_check.py PEAK_HBM_TB_S)"


# ---------------------------------------------------------------------------------------------- workloads

def ray_sections(R: int, S: int, C: int, seed: int = 0) -> list[torch.Tensor]:
    """Random NeuS ray sections ``(s_prev, s_next, inv_s, t, values)`` (float32, CPU): an SDF falling
    through zero along each ray with noise, as ``test_render._random_sections`` builds them."""
    g = torch.Generator().manual_seed(seed)
    sdf = torch.linspace(1.5, -0.8, S).expand(R, S) + 0.3 * torch.randn(R, S, generator=g)
    d = torch.full((R, S), 0.2)
    slope = -torch.rand(R, S, generator=g)
    s_prev, s_next = sdf - slope * d / 2, sdf + slope * d / 2
    t = torch.arange(S, dtype=torch.float32).expand(R, S) * 0.2 + 1.0
    values = torch.rand(R, S, C, generator=g)
    return [s_prev.contiguous(), s_next.contiguous(), torch.tensor(3.0), t.contiguous(), values]


def reference_op(s_prev, s_next, inv_s, t, values):
    from mv4d_core.render import composite, neus_alpha

    return composite(neus_alpha(s_prev, s_next, inv_s), t, values)


def fused_op(s_prev, s_next, inv_s, t, values, impl: str = "auto"):
    from mv4d_core.render import fused_neus_composite

    return fused_neus_composite(s_prev, s_next, inv_s, t, values, backend=impl)


def render_workload(num_rays: int, device: torch.device):
    """``bench_render.build_workload`` (TINY field, 6 cameras) cut to exactly ``num_rays`` rays."""
    from bench.bench_render import build_workload
    from mv4d_core.render.rays import RayBundle

    per_cam = math.ceil(num_rays / 6)
    while 6 * math.isqrt(per_cam) * (per_cam // math.isqrt(per_cam)) < num_rays:
        per_cam += 1                                           # the lattice is side x (n // side) per camera
    field, grid, rays = build_workload(per_cam, device)
    rays = RayBundle(*(x[:, :num_rays] for x in (rays.origins, rays.directions, rays.z_per_t, rays.uv,
                                                  rays.camera_index)))
    return field, grid, rays


def composite_bytes(R: int, S: int, C: int, elem: int = 4) -> dict:
    """Compulsory bytes of the compositing (every input read once, every output written once)."""
    fwd = elem * (R * S * (3 + C) + 1) + elem * (R * S + R * (2 + C))
    bwd = elem * (R * S * (4 + C) + R * (2 + C) + 1) + elem * (R * S * (3 + C) + R)
    return {"forward": fwd, "forward_backward": fwd + bwd}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (b the reference), computed in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


# ---------------------------------------------------------------------------------------------- (a)

def _compare(fused: dict, reference: dict, truth: dict, tol: dict) -> dict:
    """Per tensor: the fused result and the reference in the same precision, each against the float64
    truth (``max |x - truth| / max |truth|``). A tensor passes when the fused error is within ``tol``,
    (``tol["gradients"]`` for ``grad.*`` keys, else ``tol["outputs"]``), or no worse than
    :data:`NO_WORSE_FACTOR` x the reference's own error in that precision (a
    reduction such as the sharpness gradient sums R x S terms with cancellation: its float32 /
    bf16 rounding error is a property of the precision, not of the fused op)."""
    fused_err = {k: _rel(fused[k], truth[k]) for k in truth}
    ref_err = {k: _rel(reference[k], truth[k]) for k in truth}
    def limit(k: str) -> float:
        return tol["gradients"] if k.startswith("grad.") else tol["outputs"]

    failed = [k for k in truth if not (fused_err[k] <= limit(k) or fused_err[k] <= NO_WORSE_FACTOR * ref_err[k])]
    return {"fused_vs_truth": {k: _r(v) for k, v in fused_err.items()},
            "reference_vs_truth": {k: _r(v) for k, v in ref_err.items()},
            "fused_vs_reference": {k: _r(_rel(fused[k], reference[k])) for k in truth},
            "max_fused_err": _r(max(fused_err.values())), "tolerance": dict(tol), "failed": failed,
            "passed": not failed}


def part_equivalence(ctx: Context) -> dict:
    """Fused vs reference: outputs and gradients, float32 and reduced precision (see module docstring)."""
    from mv4d_core.render import render_rays, triton_available
    from mv4d_core.render.rays import RayBundle

    dev = ctx.device
    torch.manual_seed(0)
    impl = "triton kernels" if triton_available(dev) else "torch autograd.Function (CPU / no-Triton path)"
    res = {"fused_impl": impl,
           "metric": "max|x - truth| / max|truth| per tensor; truth = the reference in float64 on the same "
                     "(rounded) inputs; pass: fused error <= tolerance, or <= "
                     f"{NO_WORSE_FACTOR:g} x the reference's own error in the same precision",
           "tolerances": {k: dict(v) for k, v in TOLERANCES.items()}, "no_worse_factor": NO_WORSE_FACTOR,
           "composite": {}, "render_rays": {}}
    out_names = ("out.weights", "out.depth_t", "out.values", "out.opacity")
    in_names = ("grad.s_prev", "grad.s_next", "grad.inv_s", "grad.t", "grad.values")

    # --- the op alone, every input (the sharpness included) cast to each dtype
    R = 256 if ctx.small else 16384
    base = [x.to(dev) for x in ray_sections(R, SAMPLES_PER_RAY, COLOUR_CHANNELS, seed=1)]
    g = torch.Generator().manual_seed(5)
    ups = [torch.randn(s, generator=g).to(dev) for s in ((R, SAMPLES_PER_RAY), (R,), (R, COLOUR_CHANNELS), (R,))]

    def op_run(op, xs: list[torch.Tensor]) -> dict:
        xs = [x.clone().requires_grad_(True) for x in xs]
        outs = op(*xs)
        grads = torch.autograd.grad(outs, xs, [u.to(o.dtype) for u, o in zip(ups, outs)])
        return dict(zip(out_names + in_names, tuple(outs) + tuple(grads)))

    impls = ["auto"] + (["torch"] if triton_available(dev) else [])   # on CUDA also the torch fallback
    for dname in ["float32"] + _lowp_dtypes(ctx):
        lo = [x.to(DTYPES[dname]) for x in base]
        truth = op_run(reference_op, [x.double() for x in lo])
        for which in impls:
            key = dname if which == "auto" else f"{dname}.fused_torch_impl"
            try:
                entry = _compare(op_run(lambda *a: fused_op(*a, impl=which), lo), op_run(reference_op, lo), truth,
                                 TOLERANCES[dname])
                entry.update(rays=R, samples_per_ray=SAMPLES_PER_RAY, inputs=f"all cast to {dname}")
                res["composite"][key] = entry
            except Exception as e:  # noqa: BLE001 - one dtype failing must not hide the others
                res["composite"][key] = {"error": f"{type(e).__name__}: {e}"}

    # --- the whole renderer: gradients through the field and the sharpness; low precision = autocast
    n_rays = 6 * 64 if ctx.small else 6 * 2731
    field, grid, rays = render_workload(n_rays, dev)
    gu = torch.Generator().manual_seed(7)
    u_depth, u_rgb, u_op = (torch.randn(s, generator=gu).to(dev) for s in ((1, n_rays), (1, n_rays, 3), (1, n_rays)))

    def run(backend: str, dname: str, dtype=torch.float32) -> tuple[dict, str]:
        f = field.detach().to(dtype).requires_grad_(True)
        inv_s = torch.tensor(20.0, device=dev, dtype=dtype, requires_grad=True)
        rb = RayBundle(*(x.to(dtype) if x.is_floating_point() else x for x in
                         (rays.origins, rays.directions, rays.z_per_t, rays.uv, rays.camera_index)))
        with _autocast(ctx, dname):
            out = render_rays(f, grid, rb, inv_s, num_samples=SAMPLES_PER_RAY, jitter=False, backend=backend)
            wdt = str(out.weights.dtype)
            loss = (out.depth_m.to(dtype) * u_depth.to(dtype)).sum() + (out.rgb.to(dtype) * u_rgb.to(dtype)).sum() \
                + (out.opacity.to(dtype) * u_op.to(dtype)).sum()
        gf, gs = torch.autograd.grad(loss, (f, inv_s))
        return {"depth_m": out.depth_m, "rgb": out.rgb, "opacity": out.opacity, "weights": out.weights,
                "grad.field": gf, "grad.inv_s": gs}, wdt

    truth, _ = run("reference", "float32", torch.float64)
    for dname in ["float32"] + _lowp_dtypes(ctx):
        stage = "reference"
        try:
            ref, _ = run("reference", dname)
            stage = "fused"
            fus, wdt = run("fused", dname)
            entry = _compare(fus, ref, truth, TOLERANCES[dname])
            entry.update(rays=n_rays, samples_per_ray=SAMPLES_PER_RAY, compositing_dtype=wdt)
            if dname != "float32":
                entry["mode"] = f"torch.autocast({ctx.device.type}, {dname}) around render_rays (float32 inputs)"
                if wdt == "torch.float32":
                    entry["note"] = "autocast kept the compositing in float32 (its inputs come from grid_sample)"
            res["render_rays"][dname] = entry
        except Exception as e:  # noqa: BLE001
            res["render_rays"][dname] = {"error": f"{type(e).__name__}: {e}", "failed_in": f"backend={stage!r}",
                                         "mode": f"torch.autocast({ctx.device.type}, {dname}) around render_rays"}
    entries = {f"{lvl}.{k}": v for lvl in ("composite", "render_rays") for k, v in res[lvl].items()}
    res["failed_checks"] = [k for k, v in entries.items() if not v.get("passed")]
    res["checks"] = len(entries)
    res["passed"] = bool(entries) and not res["failed_checks"]
    return res


# ---------------------------------------------------------------------------------------------- (b)

def part_render_timing(ctx: Context) -> dict:
    """Fused vs reference timing and achieved bandwidth of the compositing (see module docstring)."""
    from mv4d_core.render import render_rays, triton_available

    dev = ctx.device
    torch.manual_seed(0)
    S, C = SAMPLES_PER_RAY, COLOUR_CHANNELS
    sizes = [20_000] if ctx.reduced else [2 ** 20, 2 ** 21, 2 ** 22]
    res: dict = {"fused_impl": "triton" if triton_available(dev) else "torch autograd.Function",
                 "fused_speedup": "reference median ms / fused median ms (> 1: fused faster)",
                 "samples_per_ray": S, "channels_composited": C, "dtype": "float32",
                 "timing": "CUDA events, synchronize around each call" if ctx.cuda else "wall clock (CPU)",
                 "bytes_counted": "compulsory traffic of the compositing: inputs read once + outputs written "
                                  "once (forward: s_prev, s_next, t, values -> weights, depth, values_out, "
                                  "opacity; backward adds upstream grads in, five input grads out); float32; "
                                  "the same count is used for the reference (effective bandwidth)"}
    if ctx.cuda:
        name = torch.cuda.get_device_name(0)
        peak, note = peak_bandwidth(name)
        res["peak_bandwidth_gb_s"] = _r(peak / 1e9) if peak else None
        res["peak_bandwidth_note"] = note
    else:
        peak = None
        res["peak_bandwidth_gb_s"] = None
        res["peak_bandwidth_note"] = "CPU run: the peak table covers NVIDIA GPUs only"
    # A measured device-to-device copy: the bandwidth a trivial kernel reaches on this device.
    try:
        nbytes = (32 if ctx.reduced else 1024) * 2 ** 20
        a = torch.empty(nbytes // 4, device=dev)
        b = torch.empty_like(a)
        t = ctx.round_robin({"copy": lambda: b.copy_(a)})["copy"]
        res["copy_bandwidth_gb_s"] = _r(2 * nbytes / (statistics.median(t) / 1e3) / 1e9)
        res["copy_note"] = f"b.copy_(a) of {nbytes // 2 ** 20} MiB, read + write counted"
        del a, b
    except Exception as e:  # noqa: BLE001
        res["copy_bandwidth_gb_s"] = None
        res["copy_note"] = f"{type(e).__name__}: {e}"
    copy_bw = res["copy_bandwidth_gb_s"]

    res["sizes"] = {}
    for n in sizes:
        R = n // S
        label = f"{n / 2 ** 20:.0f}M" if n >= 2 ** 20 else f"{n // 1000}k"
        entry: dict = {"samples": R * S, "rays": R}
        # --- the compositing op alone
        base = [x.to(dev) for x in ray_sections(R, S, C, seed=2)]
        xs = [x.clone().requires_grad_(True) for x in base]
        g = torch.Generator().manual_seed(3)
        ups = [torch.randn(s, generator=g).to(dev) for s in ((R, S), (R,), (R, C), (R,))]
        ops = {"reference": reference_op, "fused": fused_op}

        def fwd(op):
            with torch.no_grad():
                return op(*base)

        def fwd_bwd(op):
            return torch.autograd.grad(op(*xs), xs, ups)

        nbytes = composite_bytes(R, S, C)
        comp: dict = {}
        for mode, fn in (("forward", fwd), ("forward_backward", fwd_bwd)):
            times = ctx.round_robin({k: (lambda op=op, fn=fn: fn(op)) for k, op in ops.items()})
            m: dict = {}
            for k in ops:
                st = _stats(times[k])
                bw = nbytes[mode] / (statistics.median(times[k]) / 1e3)
                st["effective_gb_s"] = _r(bw / 1e9)
                st["fraction_of_peak"] = _r(bw / peak) if peak else None
                st["fraction_of_copy"] = _r(bw / 1e9 / copy_bw) if copy_bw else None
                m[k] = st
            m["bytes"] = nbytes[mode]
            m["fused_speedup"] = _r(m["reference"]["median_ms"] / m["fused"]["median_ms"])
            comp[mode] = m
        if ctx.cuda:
            comp["peak_mem_fwd_bwd_mb"] = {k: _peak_mem_mb(lambda op=op: fwd_bwd(op)) for k, op in ops.items()}
        entry["composite"] = comp
        del base, xs, ups
        # --- the whole renderer (sampling + trilinear field lookup + alpha + compositing)
        field, grid, rays = render_workload(R, dev)
        inv_s = torch.tensor(20.0, device=dev)
        f_req = field.clone().requires_grad_(True)
        s_req = inv_s.clone().requires_grad_(True)

        def r_fwd(backend):
            with torch.no_grad():
                return render_rays(field, grid, rays, inv_s, num_samples=S, jitter=False, backend=backend)

        def r_fwd_bwd(backend):
            out = render_rays(f_req, grid, rays, s_req, num_samples=S, jitter=False, backend=backend)
            return torch.autograd.grad(out.depth_m.mean() + out.rgb.mean(), (f_req, s_req))

        rend: dict = {}
        for mode, fn in (("forward", r_fwd), ("forward_backward", r_fwd_bwd)):
            times = ctx.round_robin({k: (lambda k=k, fn=fn: fn(k)) for k in ("reference", "fused")})
            m = {k: _stats(v) for k, v in times.items()}
            m["fused_speedup"] = _r(m["reference"]["median_ms"] / m["fused"]["median_ms"])
            rend[mode] = m
        if ctx.cuda:
            rend["peak_mem_fwd_bwd_mb"] = {k: _peak_mem_mb(lambda k=k: r_fwd_bwd(k)) for k in ("reference", "fused")}
        entry["render_rays"] = rend
        res["sizes"][label] = entry
        del field, rays, f_req
        _release()
    return res


def _peak_mem_mb(fn: Callable[[], object]) -> float:
    """Peak CUDA memory (MiB) allocated while ``fn`` runs, above what was allocated before it."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del out
    return _r((peak - before) / 2 ** 20)


# ---------------------------------------------------------------------------------------------- (c)

STAGES = ("backbone", "neck", "depth_net", "lift", "temporal", "lidar_encoder", "depth_refiner", "neck3d", "heads")


def stage_split(ctx: Context, model, call: Callable[[], object], repeats: int) -> dict:
    """Median ms per top-level module: forward pre/post hooks record CUDA events (no sync inside the
    forward, so the split does not perturb it) or wall time on CPU."""
    marks: dict[str, list] = {n: [] for n in STAGES}
    hooks = []
    for n in STAGES:
        mod = getattr(model, n, None)
        if mod is None:
            continue

        def pre(m, i, n=n):
            if ctx.cuda:
                e = torch.cuda.Event(enable_timing=True)
                e.record()
                marks[n].append([e, None])
            else:
                marks[n].append([time.perf_counter(), None])

        def post(m, i, o, n=n):
            if ctx.cuda:
                e = torch.cuda.Event(enable_timing=True)
                e.record()
                marks[n][-1][1] = e
            else:
                marks[n][-1][1] = time.perf_counter()

        hooks += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        for _ in range(repeats):
            call()
        ctx.sync()
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for n, pairs in marks.items():
        if pairs:
            ms = [a.elapsed_time(b) if ctx.cuda else (b - a) * 1e3 for a, b in pairs]
            out[n] = _r(statistics.median(ms))
    return out


def _with_lidar(inputs, cfg):
    """Random LiDAR inputs of ``cfg``'s shapes (``bench_model.with_lidar`` when it exists)."""
    try:
        from bench.bench_model import with_lidar

        return with_lidar(inputs, cfg)
    except ImportError:
        from dataclasses import replace

        from mv4d_core.models.lidar_inputs import volume_channels

        g = torch.Generator().manual_seed(0)
        B, N, _, H, W = inputs.images.shape
        vol = torch.rand(B, volume_channels(cfg.lidar.previous_sweeps), *cfg.grid.shape, generator=g)
        depth = torch.rand(B, N, 3, H, W, generator=g) * 30.0
        return replace(inputs, lidar_volume=vol, lidar_depth=depth, lidar_valid=torch.ones(B))


def _model_inputs(cfg, device):
    from bench.bench_model import make_inputs

    inputs = make_inputs(cfg)
    if cfg.lidar.enabled:
        inputs = _with_lidar(inputs, cfg)
    return inputs.to(device)


def part_model_latency(ctx: Context) -> dict:
    """Eval forward latency per config and precision, stage split, optional CUDA graph / compile."""
    from mv4d_core.models import ModelConfig, build_model, count_parameters
    from mv4d_core.models.config import LidarConfig

    dev = ctx.device
    configs = {"tiny": ModelConfig.tiny(),
               "tiny_fusion": ModelConfig.tiny().replace(lidar=LidarConfig(enabled=True), flow_gate=True),
               "base": ModelConfig.base()}
    res: dict = {"batch": 1, "mode": "eval, torch.inference_mode, batch 1 (make_inputs / random LiDAR inputs)",
                 "timing": "CUDA events" if ctx.cuda else "wall clock (CPU)",
                 "stage_split": "forward pre/post hooks on the top-level modules, median per module"}
    stage_reps = 1 if ctx.reduced else 5
    kept: dict = {}
    # Phase 1: eager forward of every config and precision.
    for name, cfg in configs.items():
        if ctx.reduced and name == "base":
            res[name] = {"skipped": "reduced run: tiny sizes only"}
            continue
        try:
            torch.manual_seed(0)
            model = build_model(cfg).to(dev).eval()
            inputs = _model_inputs(cfg, dev)
            entry: dict = {"params": count_parameters(model), "cameras": cfg.num_cameras,
                           "image": [cfg.image_height, cfg.image_width], "grid": list(cfg.grid.shape)}
            dtypes = ["float32"] + _lowp_dtypes(ctx)
            if ctx.reduced and name == "tiny_fusion":
                dtypes = ["float32"]                               # keep the CPU run short
            for dname in dtypes:
                try:
                    with torch.inference_mode(), _autocast(ctx, dname):
                        call = lambda: model(inputs)  # noqa: E731
                        t = ctx.round_robin({"fwd": call}, repeats=ctx.model_repeats,
                                             warmup=ctx.model_warmup)["fwd"]
                        e = _stats(t)
                        e["stage_median_ms"] = stage_split(ctx, model, call, stage_reps)
                    entry[dname] = e
                except Exception as ex:  # noqa: BLE001
                    entry[dname] = {"error": f"{type(ex).__name__}: {ex}"}
            res[name] = entry
            if name in ("tiny", "base"):
                kept[name] = (model, inputs)
            del model, inputs
        except Exception as ex:  # noqa: BLE001
            res[name] = {"error": f"{type(ex).__name__}: {ex}"}
        _release()
    # Phase 2: the optional variants, after every eager number is in (a failed CUDA-graph capture can
    # leave the CUDA context unusable; compile takes whatever budget is left).
    for name in ("tiny", "base"):
        if name not in kept:
            continue
        model, inputs = kept[name]
        res[name]["cuda_graph_bfloat16"] = _optional(lambda: _cuda_graph(ctx, model, inputs))
        if name == "base":
            res[name]["cudnn_benchmark_bfloat16"] = _optional(lambda: _cudnn_benchmark(ctx, model, inputs))
            res[name]["torch_compile_bfloat16"] = _optional(lambda: _compiled(ctx, model, inputs))
        del model, inputs
        kept.pop(name)
        _release()
    return res


def _optional(fn: Callable[[], dict]) -> dict:
    try:
        return fn()
    except Skip as s:
        return {"skipped": str(s)}
    except Exception as ex:  # noqa: BLE001
        return {"error": f"{type(ex).__name__}: {ex}"[:500]}


def _cuda_graph(ctx: Context, model, inputs) -> dict:
    """One CUDA graph of the bf16 eval forward (static inputs), replayed; compared with eager."""
    if not ctx.cuda:
        raise Skip("needs CUDA")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        eager = model(inputs).occupancy_prob.float().clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    # Warm-up on a side stream (cuDNN/cuBLAS workspaces) before capture, as torch.cuda.graphs requires;
    # autocast's weight cache must be off while capturing.
    with torch.cuda.stream(s), torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16,
                                                                       cache_enabled=False):
        for _ in range(3):
            model(inputs)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
        with torch.cuda.graph(graph):
            static_out = model(inputs)
    t = ctx.round_robin({"replay": graph.replay})["replay"]
    e = _stats(t)
    e["max_abs_diff_occupancy_vs_eager"] = _r(float((static_out.occupancy_prob.float() - eager).abs().max()))
    return e


def _cudnn_benchmark(ctx: Context, model, inputs) -> dict:
    """bf16 eager forward with ``torch.backends.cudnn.benchmark = True`` (the library leaves it off)."""
    if not ctx.cuda:
        raise Skip("needs CUDA")
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            return _stats(ctx.round_robin({"fwd": lambda: model(inputs)}, warmup=5)["fwd"])
    finally:
        torch.backends.cudnn.benchmark = old


def _compiled(ctx: Context, model, inputs) -> dict:
    """``torch.compile`` of the bf16 eval forward: compile (first call) seconds and latency."""
    if not ctx.cuda:
        raise Skip("needs CUDA (inductor on CPU needs a C++ toolchain and minutes)")
    if not ctx.compile_ok:
        raise Skip("--no-compile")
    if ctx.time_left() < 150:
        raise Skip(f"time budget: {ctx.time_left():.0f} s left of {ctx.budget_s:.0f} s, compile needs ~1-2 min")
    import torch._dynamo

    torch._dynamo.reset()
    compiled = torch.compile(model, dynamic=False)
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        compiled(inputs)
        torch.cuda.synchronize()
        first_s = time.perf_counter() - t0
        e = _stats(ctx.round_robin({"fwd": lambda: compiled(inputs)})["fwd"])
    e["compile_first_call_s"] = _r(first_s)
    torch._dynamo.reset()
    return e


# ---------------------------------------------------------------------------------------------- (d)

def make_frames(n: int, height: int, width: int, seed: int = 0):
    """``n`` FrameRecords of 6 random uint8 images ``height x width``, 10 Hz, ego +1 m per frame."""
    from mv4d_core.data.frame import FrameRecord
    from mv4d_core.data.synth import synthetic_rig
    from mv4d_core.geometry.camera import PinholeCamera

    rig = synthetic_rig("tiny")
    names, T_bc = rig.camera_names, rig.extrinsics()
    K = np.stack([PinholeCamera.from_fov(70.0, width, height).K] * len(names))
    rng = np.random.default_rng(seed)
    # Two image sets, alternated: generating 26 MB of random pixels per frame would dominate the run.
    pool = [rng.integers(0, 256, (len(names), height, width, 3), dtype=np.uint8) for _ in range(min(n, 2))]
    frames = []
    for i in range(n):
        T_wb = np.eye(4)
        T_wb[0, 3] = float(i)
        frames.append(FrameRecord(1_000_000_000 + i * 100_000_000, list(names), pool[i % len(pool)], K, T_bc, T_wb))
    return frames


def part_pipeline(ctx: Context) -> dict:
    """``PerceptionPipeline.process`` end to end: pre / inference / post ms and the end-to-end rate."""
    from mv4d_core.engines.torch_engine import TorchEngine
    from mv4d_core.models import ModelConfig
    from mv4d_core.pipeline.config import PerceptionConfig
    from mv4d_core.pipeline.pipeline import PerceptionPipeline, output_arrays

    H, W = (180, 320) if ctx.reduced else (900, 1600)
    n_warm, n_timed = (0, 2) if ctx.reduced else (3, 30)
    frames = make_frames(n_warm + n_timed, H, W)
    res: dict = {"frames_timed": n_timed, "warmup_frames": n_warm, "image": [H, W], "cameras": 6,
                 "engine": f"TorchEngine.from_model_config (untrained, float32 eager, device {ctx.device})",
                 "finding": "pre-processing resizes the 6 images on the CPU with OpenCV "
                            "(models.inputs.resize_cameras, INTER_AREA) and converts to float32 there; the "
                            "engine copies them to the device every frame. Post-processing (depth "
                            "back-projection, colour resize) is numpy on the CPU too."}
    models = ["tiny"] if ctx.reduced else ["base", "tiny"]
    for name in models:
        try:
            cfg = ModelConfig.named(name)
            engine = TorchEngine.from_model_config(cfg, device=str(ctx.device))
            pipe = PerceptionPipeline(engine, PerceptionConfig.from_dict({"device": str(ctx.device)}))
            pre, inf, post, wall, pack = [], [], [], [], []
            for i, frame in enumerate(frames):
                t0 = time.perf_counter()
                out = pipe.process(frame)
                t1 = time.perf_counter()
                output_arrays(out, pipe.config)
                t2 = time.perf_counter()
                if i >= n_warm:
                    tm = pipe.timings
                    pre.append(tm.preprocess_ms)
                    inf.append(tm.inference_ms)
                    post.append(tm.postprocess_ms)
                    wall.append((t1 - t0) * 1e3)
                    pack.append((t2 - t1) * 1e3)
            med = {k: statistics.median(v) for k, v in (("pre", pre), ("inf", inf), ("post", post), ("wall", wall),
                                                         ("pack", pack))}
            res[name] = {"model_image": [cfg.image_height, cfg.image_width],
                         "preprocess_ms": _r(med["pre"]), "inference_ms": _r(med["inf"]),
                         "postprocess_ms": _r(med["post"]), "pre_plus_post_ms": _r(med["pre"] + med["post"]),
                         "process_wall_ms": _r(med["wall"]), "end_to_end_hz": _r(1e3 / med["wall"]),
                         "message_arrays_ms": _r(med["pack"]), "temporal_frames": pipe.stats.temporal_frames,
                         "note": "medians over the timed frames; end_to_end_hz = 1000 / process wall ms "
                                 "(message_arrays_ms = output_arrays, not included)"}
            del engine, pipe
        except Exception as ex:  # noqa: BLE001
            res[name] = {"error": f"{type(ex).__name__}: {ex}"}
        _release()
    return res


# ---------------------------------------------------------------------------------------------- (e)

def synthetic_triplet(cfg, seed: int = 0):
    """A camera-only ``TrainSample`` (t-1, t, t+1) of random images at the model size, ego +1 m per frame."""
    from bench.bench_model import make_inputs
    from mv4d_core.training.data import CachedFrame, TrainSample

    rig = make_inputs(cfg)
    K, T = rig.intrinsics[0].numpy(), rig.T_base_cam[0].numpy()
    N = cfg.num_cameras
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(3):
        T_wb = np.eye(4)
        T_wb[0, 3] = float(k)
        frames.append(CachedFrame(
            images=rng.integers(0, 256, (N, 3, cfg.image_height, cfg.image_width), dtype=np.uint8), K=K,
            T_base_cam=T, T_world_base=T_wb, stamp_s=0.1 * k, lidar_xyz=None,
            lidar_uv=np.zeros((N, 1, 2), np.float32), lidar_depth_m=np.zeros((N, 1), np.float32),
            lidar_count=np.zeros(N, np.int64), stamp_ns=100_000_000 * k))
    T_next_cur = np.linalg.inv(frames[2].T_world_base) @ frames[1].T_world_base
    return TrainSample(tuple(frames), None, None, None, T_next_cur, 0, "gpu_check")


def part_train_step(ctx: Context) -> dict:
    """Self-supervised training step time and peak memory (base; tiny in reduced runs)."""
    from mv4d_core.models import ModelConfig, build_model
    from mv4d_core.training.config import RayConfig, TrainConfig
    from mv4d_core.training.step import SelfSupervisedStep

    dev = ctx.device
    name = "tiny" if ctx.reduced else "base"
    cfg = ModelConfig.named(name)
    rays = RayConfig(rows=4, cols=8, num_samples=16) if ctx.reduced else RayConfig()
    tcfg = TrainConfig(model=cfg, rays=rays)
    tcfg.rays.validate()                                     # no data section: the sample is built here
    amp = "bfloat16" if ctx.cuda else "float32"              # the Trainer's amp="auto" rule
    warm, reps = (0, 1) if ctx.reduced else (1, 3)
    res: dict = {"model": name, "batch": 1, "cameras": cfg.num_cameras, "autocast": amp,
                 "rays": {"rows": rays.rows, "cols": rays.cols, "num_samples": rays.num_samples,
                          "backend": rays.backend},
                 "peak_memory": "torch.cuda.max_memory_allocated over the timed steps" if ctx.cuda else
                 "CPU run: not measured (CUDA only)"}
    torch.manual_seed(0)
    model = build_model(cfg).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sample = synthetic_triplet(cfg)
    step_fn = SelfSupervisedStep(tcfg)
    last: dict = {"terms": {}}

    def measure(one_step: Callable[[int], object]) -> dict:
        for i in range(warm):
            one_step(i)
        ctx.sync()
        if ctx.cuda:
            torch.cuda.reset_peak_memory_stats()
        base_mb = torch.cuda.memory_allocated() / 2 ** 20 if ctx.cuda else None
        ms = []
        for i in range(reps):
            t0 = time.perf_counter()
            one_step(warm + i)
            ctx.sync()
            ms.append((time.perf_counter() - t0) * 1e3)
        e = _stats(ms)
        if ctx.cuda:
            e["peak_memory_mb"] = _r(torch.cuda.max_memory_allocated() / 2 ** 20)
            e["allocated_before_mb"] = _r(base_mb)
        else:
            e["peak_memory_mb"] = None
        return e

    def full_step(i: int):
        opt.zero_grad(set_to_none=True)
        with _autocast(ctx, amp):
            result = step_fn(model, [sample], i)
        result.loss.backward()
        opt.step()
        last["terms"] = result.terms

    try:
        res["self_supervised"] = measure(full_step)
        res["self_supervised"]["what"] = ("SelfSupervisedStep (t-1 no-grad forward, lattice render, all default "
                                          "recipe losses, camera-only sample) + backward + AdamW step")
        res["self_supervised"]["loss_terms"] = sorted(k for k in last["terms"] if "/" not in k)
    except Exception as ex:  # noqa: BLE001 - the simple step below still runs
        res["self_supervised"] = {"error": f"{type(ex).__name__}: {ex}"[:500]}
    inputs = _model_inputs(cfg, dev)

    def easy_step(i: int):
        # bench_model.train_step's loss, with backward outside autocast (as the Trainer does).
        model.zero_grad(set_to_none=True)
        with _autocast(ctx, amp):
            out = model(inputs)
            loss = out.depth_m.mean() + out.sdf.abs().mean() + out.rgb.mean() + out.flow_mps.abs().mean()
        loss.float().backward()

    try:
        if ctx.reduced and "median_ms" in res["self_supervised"]:
            raise Skip("reduced run: the self-supervised step above covers the path")
        res["simple"] = measure(easy_step)
        res["simple"]["what"] = "like bench_model.train_step: forward + mean(depth, |sdf|, rgb, |flow|) + backward"
    except Skip as sk:
        res["simple"] = {"skipped": str(sk)}
    except Exception as ex:  # noqa: BLE001
        res["simple"] = {"error": f"{type(ex).__name__}: {ex}"[:500]}
    res["measured"] = "self_supervised" if "median_ms" in res["self_supervised"] else "simple"
    del model, opt
    _release()
    return res


# ---------------------------------------------------------------------------------------------- (f)

def part_targets(ctx: Context, parts: dict) -> dict:
    """The project's targets against what this run measured (``pass`` null where not measured)."""
    def get(d, *keys):
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d

    comparable = ctx.cuda and not ctx.reduced
    why = None if comparable else ("reduced run: sizes differ from the targets'" if ctx.reduced else
                                   "no CUDA: GPU targets not measured")
    rt = parts.get("render_timing", {})
    largest = None
    if isinstance(get(rt, "sizes"), dict) and rt["sizes"]:
        largest = list(rt["sizes"])[-1]

    def target(goal, measured, where, higher_is_better=True):
        ok = None
        if measured is not None and comparable:
            ok = bool(measured >= goal if higher_is_better else measured <= goal)
        e = {"target": f"{'>=' if higher_is_better else '<='} {goal}", "measured": measured, "pass": ok,
             "where": where}
        if measured is None:
            e["why_null"] = "not measured in this run"
        elif why:
            e["why_null"] = why
        return e

    sz = get(rt, "sizes", largest) if largest else None
    out = {
        "fused_speedup_fwd_bwd_composite": target(
            TARGETS["fused_speedup_fwd_bwd"], get(sz, "composite", "forward_backward", "fused_speedup"),
            f"compositing op, forward+backward, {largest} samples, reference/fused median"),
        "fused_speedup_fwd_bwd_render_rays": target(
            TARGETS["fused_speedup_fwd_bwd"], get(sz, "render_rays", "forward_backward", "fused_speedup"),
            f"whole render_rays (shared sampling + field lookup included), forward+backward, {largest} samples"),
        "fused_roofline_fraction_fwd_bwd": target(
            TARGETS["roofline_fraction"],
            get(sz, "composite", "forward_backward", "fused", "fraction_of_peak"),
            f"fused compositing forward+backward effective bandwidth / peak HBM, {largest} samples"),
    }
    ml = parts.get("model_latency", {}).get("base", {})
    cands = {k: get(ml, *path) for k, path in (
        ("eager_bfloat16", ("bfloat16", "median_ms")), ("eager_float16", ("float16", "median_ms")),
        ("cuda_graph_bfloat16", ("cuda_graph_bfloat16", "median_ms")),
        ("cudnn_benchmark_bfloat16", ("cudnn_benchmark_bfloat16", "median_ms")),
        ("torch_compile_bfloat16", ("torch_compile_bfloat16", "median_ms")))}
    cands = {k: v for k, v in cands.items() if v is not None}
    best = min(cands, key=cands.get) if cands else None
    out["base_forward_ms_reduced_precision"] = target(
        TARGETS["base_forward_ms"], cands.get(best) if best else None,
        f"base model, 6 x 256x704, best reduced-precision variant ({best})", higher_is_better=False)
    pipe = parts.get("pipeline", {})
    model_used = next((m for m in ("base", "tiny") if "preprocess_ms" in (pipe.get(m) or {})), None)
    pl = pipe.get(model_used) if model_used else None
    out["pipeline_pre_plus_post_ms"] = target(
        TARGETS["pipeline_pre_post_ms"], get(pl, "pre_plus_post_ms"),
        f"PerceptionPipeline timings, 6 x {'x'.join(map(str, pipe.get('image', [])))} frames, {model_used} model",
        higher_is_better=False)
    out["end_to_end_hz"] = target(TARGETS["end_to_end_hz"], get(pl, "end_to_end_hz"),
                                  f"1000 / median process() wall ms, {model_used} model")
    return out


# ---------------------------------------------------------------------------------------------- table

def _rows(prefix: str, obj, rows: list) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _rows(f"{prefix}.{k}" if prefix else str(k), v, rows)
    elif isinstance(obj, list) and not all(isinstance(x, (int, float)) for x in obj):
        rows.append((prefix, ", ".join(map(str, obj))))
    else:
        rows.append((prefix, obj))


def format_table(result: dict) -> str:
    """The run as text: header, one block per part (flattened metric | value), the targets last."""
    env = result["environment"]
    lines = ["mv4d GPU check" + (" (reduced)" if result["reduced"] else ""),
             f"device {env.get('device_name')} | driver {env.get('driver_version')} | torch {env.get('torch')} | "
             f"CUDA {env.get('cuda_runtime')} | triton {env.get('triton')} | tensorrt {env.get('tensorrt')}"]
    if result.get("note"):
        lines.append(result["note"])
    for part, body in result["parts"].items():
        secs = result["part_seconds"].get(part)
        lines += ["", f"== {part} ({secs} s) " + "=" * max(0, 60 - len(part))]
        if part == "targets" and isinstance(body, dict) and "skipped" not in body and "error" not in body:
            w = max(len(k) for k in body)
            for k, t in body.items():
                verdict = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
                lines.append(f"  {verdict}  {k:<{w}}  measured {t['measured']}  target {t['target']}  ({t['where']})")
            continue
        rows: list = []
        _rows("", body, rows)
        w = min(70, max((len(k) for k, _ in rows), default=10))
        for k, v in rows:
            text = str(v)
            lines.append(f"  {k:<{w}}  {text if len(text) <= 110 else text[:107] + '...'}")
    lines.append("")
    lines.append(f"total {result['total_seconds']} s; JSON: {result['out']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/bench/gpu_check.json")
    ap.add_argument("--reduced", action="store_true",
                    help="same code paths at tiny sizes (CPU when CUDA is absent), well under a minute")
    ap.add_argument("--parts", default="", help=f"comma-separated subset of {','.join(PARTS)} (default: all)")
    ap.add_argument("--budget-s", type=float, default=450.0,
                    help="time budget; optional extras (torch.compile) are skipped once it runs low")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    args = ap.parse_args(argv)
    wanted = set(args.parts.split(",")) if args.parts else set(PARTS)
    unknown = wanted - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")

    ctx = Context(args.reduced, args.budget_s, not args.no_compile)
    result: dict = {"tool": "bench.gpu_check", "reduced": ctx.reduced, "device": str(ctx.device),
                    "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        result["environment"] = environment(ctx)
    except Exception as ex:  # noqa: BLE001
        result["environment"] = {"error": f"{type(ex).__name__}: {ex}"}
    for key in ("device_name", "driver_version", "torch", "cuda_runtime", "triton", "tensorrt"):
        result[key] = result["environment"].get(key)                 # the headline facts, at the top
    if not ctx.cuda:
        result["note"] = ("no CUDA device: GPU-only measurements (Triton kernels, CUDA graphs, torch.compile, CUDA "
                          "memory, GPU targets) are skipped; " + ("the reduced run measures the CPU paths"
                                                                  if ctx.reduced else
                                                                  "run it on a GPU machine for the real check"))
    runners = {"equivalence": part_equivalence, "render_timing": part_render_timing,
               "model_latency": part_model_latency, "pipeline": part_pipeline, "train_step": part_train_step}
    # Without CUDA a full-size run would take far too long on CPU and measure nothing the targets
    # are about; the reduced run covers the CPU paths.
    gpu_only = set() if (ctx.cuda or ctx.reduced) else {"render_timing", "model_latency", "pipeline", "train_step"}
    result["parts"], result["part_seconds"] = {}, {}
    # model_latency runs last: its optional CUDA-graph capture and torch.compile are the riskiest calls
    # (a failed capture can leave the CUDA context unusable) and compile takes what budget is left.
    order = ("equivalence", "render_timing", "pipeline", "train_step", "model_latency", "targets")
    for name in order:
        t0 = time.perf_counter()
        try:
            if name not in wanted:
                raise Skip("not selected (--parts)")
            if name in gpu_only:
                raise Skip("no CUDA device (full-size run); use --reduced for the CPU paths")
            if name != "targets" and ctx.time_left() < 0:
                raise Skip(f"time budget of {ctx.budget_s:.0f} s spent before this part")
            body = part_targets(ctx, result["parts"]) if name == "targets" else runners[name](ctx)
        except Skip as s:
            body = {"skipped": str(s)}
        except Exception as ex:  # noqa: BLE001 - one part failing must not hide the others
            body = {"error": f"{type(ex).__name__}: {ex}"[:1000]}
        result["parts"][name] = body
        result["part_seconds"][name] = round(time.perf_counter() - t0, 2)
        _release()
    result["parts"] = {k: result["parts"][k] for k in PARTS}            # report in the (a)..(f) order
    result["part_seconds"] = {k: result["part_seconds"][k] for k in PARTS}
    result["execution_order"] = list(order)
    result["total_seconds"] = round(time.perf_counter() - ctx.t0, 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result["out"] = str(out)
    out.write_text(json.dumps(result, indent=2))
    print(format_table(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
