"""Synthetic-world benchmark: frames/s of ``render_frame`` (6 cameras + LiDAR + occupancy GT).

Usage: ``python -m bench.bench_synth [--out out/bench/synth.json] [--size tiny] [--frames 20]``.
Target: tiny (6 x 96x176 px, 32 x 1024 LiDAR beams, TINY grid) >= 10 frames/s on one core.
Reported: end-to-end frames/s (median over frames), a per-stage split (world posing + sensor
casting/shading, occupancy), and the baseline measured in the same run: the same sensor
rendering with culling disabled (every ray tested against every primitive), whose output is
checked to be identical. Threads of BLAS are pinned to 1 so the number is single-core; on a
shared machine read ``frames_per_cpu_s`` (process CPU time, less sensitive to other load).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from bench.common import write_result  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/bench/synth.json")
    ap.add_argument("--size", choices=("tiny", "base"), default="tiny")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--baseline-frames", type=int, default=3)
    args = ap.parse_args(argv)

    from mv4d_core.data.synth import LIDAR_PATTERNS, make_world, render_frame, synthetic_rig
    from mv4d_core.data.synth.occupancy import occupancy_at
    from mv4d_core.data.synth.render import pose_scene, render_sensors
    from mv4d_core.geometry.voxel_grid import TINY

    dt = 0.1
    world = make_world(0, duration_s=args.frames * dt)
    rig = synthetic_rig(args.size)
    pattern = LIDAR_PATTERNS[args.size]
    render_frame(world, 0.0, args.size)  # warm caches (ray tiles, imports)

    total, cpu, sensors, occ = [], [], [], []
    for i in range(args.frames):
        t = i * dt
        t0, c0 = time.perf_counter(), time.process_time()
        render_frame(world, t, args.size)
        total.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        T = world.ego.T_world_base(t)
        t0 = time.perf_counter()
        scene = pose_scene(world, t, np.array([T[0, 3], T[1, 3], 0.0]))
        render_sensors(scene, rig, pattern, T, dt)
        sensors.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        occupancy_at(world, t, T, TINY)
        occ.append(time.perf_counter() - t0)

    brute, culled_same = [], True
    for i in range(args.baseline_frames):
        t = i * dt
        T = world.ego.T_world_base(t)
        scene = pose_scene(world, t, np.array([T[0, 3], T[1, 3], 0.0]))
        t0 = time.perf_counter()
        ref = render_sensors(scene, rig, pattern, T, dt, cull=False)
        brute.append(time.perf_counter() - t0)
        fast = render_sensors(scene, rig, pattern, T, dt)
        culled_same &= all(np.array_equal(ref[k], fast[k]) for k in ("images", "depth_m", "semantics", "lidar_xyz"))

    med = statistics.median
    cam = rig.cameras[0].camera
    result = {
        "size": args.size,
        "cameras": rig.num_cameras,
        "image_hw": [cam.height, cam.width],
        "lidar_rays": pattern.beams * pattern.azimuth_steps,
        "grid_shape": list(TINY.shape),
        "primitives": {"boxes": len(world.boxes), "cylinders": len(world.cylinders), "spheres": len(world.spheres)},
        "frames_timed": args.frames,
        "frame_ms_median": 1e3 * med(total),
        "frame_ms_min": 1e3 * min(total),
        "frames_per_s": 1.0 / med(total),
        "frame_cpu_ms_median": 1e3 * med(cpu),
        "frames_per_cpu_s": 1.0 / med(cpu),
        "load_average_1min": os.getloadavg()[0],
        "sensors_ms_median": 1e3 * med(sensors),
        "occupancy_ms_median": 1e3 * med(occ),
        "baseline_no_culling_sensors_ms_median": 1e3 * med(brute),
        "culling_speedup": med(brute) / med(sensors),
        "culled_output_identical_to_baseline": bool(culled_same),
        "target_frames_per_s": 10.0 if args.size == "tiny" else None,
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
