"""``mv4d eval-flow``: score mv4d's label-free flow objective on LiDAR-only scene-flow data.

    mv4d eval-flow --data ../shared/data/argoverse2_av2api --json runs/eval_av2_flow.json

Argoverse 2 logs (``flow_labels.feather`` + two sweeps) have no camera images, so the camera
network cannot run on them; see :mod:`mv4d_core.eval.lidar_flow` for what is scored instead.
Writes the JSON and a Markdown table next to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mv4d_core.utils.threads import restores_torch_threads

HELP = "fit mv4d's label-free flow objective to LiDAR sweep pairs (Argoverse 2) and score it against flow labels"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", required=True, help="Argoverse 2 log folders or folders holding them")
    parser.add_argument("--json", required=True, help="output JSON (a .md table is written next to it)")
    parser.add_argument("--grid", choices=("tiny", "occ3d"), default="tiny",
                        help="flow volume grid: tiny 100x100x8 @0.8 m (the tiny model's), occ3d 200x200x16 @0.4 m")
    parser.add_argument("--iters", type=int, default=None, help="fit iterations (default 200)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")


@restores_torch_threads
def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import torch

    from mv4d_core.data.argoverse2 import find_logs
    from mv4d_core.eval.lidar_flow import FlowFitConfig, evaluate_av2_log
    from mv4d_core.eval.report import markdown_report
    from mv4d_core.geometry.voxel_grid import OCC3D, TINY
    from mv4d_core.utils.atomic_write import write_bytes_atomic

    if args.threads:
        torch.set_num_threads(args.threads)
    logs = []
    for d in args.data:
        if not Path(d).exists():
            print(f"eval-flow: {d} does not exist", file=sys.stderr)
            return 2
        logs += find_logs(d)
    if not logs:
        print(f"eval-flow: no Argoverse 2 log (city_SE3_egovehicle.feather) under {args.data}", file=sys.stderr)
        return 2
    cfg = FlowFitConfig() if args.iters is None else replace(FlowFitConfig(), iters=args.iters)
    grid = TINY if args.grid == "tiny" else OCC3D
    report = {"grid": grid.to_dict(), "logs": {}}
    md = []
    for log_dir in logs:
        res = evaluate_av2_log(log_dir, grid, cfg, progress=True)
        report["logs"][log_dir.name] = res
        fit = res["fit"]
        md.append(markdown_report(res["results"], title=f"mv4d eval-flow: Argoverse 2 log {log_dir.name}",
                                  per_class=False))
        md.append(f"Points of sweep 0 inside the {args.grid} grid: {fit['points_in_grid']} of {fit['points_total']}; "
                  f"dynamic/static split by AV2's `dynamic` flag; flow = object motion (ego motion removed). "
                  f"The camera network is not scored: this log has no images. The fit reads no labels "
                  f"(loss {fit['loss_first']:.4f} -> {fit['loss_last']:.4f} over {cfg.iters} iterations).\n")
    out = Path(args.json)                       # write_bytes_atomic creates missing folders
    write_bytes_atomic(out, json.dumps(report, indent=2, default=float).encode())
    write_bytes_atomic(out.with_suffix(".md"), "\n".join(md).encode())
    print("\n".join(md))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0
