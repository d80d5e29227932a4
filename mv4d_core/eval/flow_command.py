"""``mv4d eval-flow``: scene flow on LiDAR-only data (Argoverse 2) under the AV2 protocol.

    mv4d eval-flow --checkpoint mv4d_core/weights/mv4d_tiny_fusion.pt \
        --data ../shared/data/argoverse2_av2api --json runs/eval_av2_flow.json

Argoverse 2 logs (``flow_labels.feather`` + two sweeps) have no camera images: a fusion model runs on
its LiDAR branch alone, next to the zero, nearest-neighbour, cluster-ICP and test-time-fit baselines
(:mod:`mv4d_core.eval.lidar_flow`). Writes the JSON and a Markdown table next to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mv4d_core.utils.threads import restores_torch_threads

HELP = "score scene flow on LiDAR-only sweep pairs (Argoverse 2): a fusion model's LiDAR branch and the baselines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", required=True, help="Argoverse 2 log folders or folders holding them")
    parser.add_argument("--checkpoint", default=None,
                        help="a fusion model (.pt, or .onnx with --engine onnxruntime) scored on its LiDAR branch "
                             "alone; default: the shipped fusion weights when present, else baselines only")
    parser.add_argument("--engine", default="torch", choices=("torch", "onnxruntime", "tensorrt"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
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
    from mv4d_core.eval.lidar_flow import AV2_RANGE_M, FlowFitConfig, evaluate_av2_log
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
    engine = None
    checkpoint = args.checkpoint
    if checkpoint is None and args.engine == "torch":
        from mv4d_core.engines.checkpoint import FUSION_WEIGHTS, default_checkpoint

        shipped = default_checkpoint(lidar=True)
        checkpoint = str(shipped) if shipped is not None and shipped.name == FUSION_WEIGHTS else None
    if checkpoint is not None:
        from mv4d_core.engines import EngineError, create_engine

        try:
            engine = create_engine(args.engine, checkpoint, args.device)
        except EngineError as e:
            print(f"eval-flow: {e.for_cli()}", file=sys.stderr)
            return 2
        if engine.spec.lidar is None:
            print(f"eval-flow: --checkpoint {checkpoint} is a camera-only model; it cannot run on LiDAR alone "
                  "(give a fusion model)", file=sys.stderr)
            return 2
    grid = engine.spec.grid if engine is not None else (TINY if args.grid == "tiny" else OCC3D)
    report = {"grid": grid.to_dict(), "checkpoint": checkpoint, "logs": {}}
    md = []
    for log_dir in logs:
        res = evaluate_av2_log(log_dir, grid, cfg, progress=True, engine=engine)
        report["logs"][log_dir.name] = res
        fit = res["fit"]
        rows = ["| method | Threeway EPE [m] ↓ | FD | FS | BS |", "|---|---|---|---|---|"]
        rows += [f"| {m} | {r['threeway_epe']:.4f} | {r['fd']:.4f} | {r['fs']:.4f} | {r['bs']:.4f} |"
                 for m, r in res["results"].items()]
        md.append(f"# mv4d eval-flow: Argoverse 2 log {log_dir.name}\n\n## Argoverse 2 protocol\n\n" + "\n".join(rows)
                  + "\n")
        md.append(markdown_report({m: {"flow": r["flow"]} for m, r in res["results"].items()},
                                  title="EPE / accuracy by AV2's dynamic flag", per_class=False)
                  .replace("# EPE", "## EPE", 1))
        md.append(f"Scored: sweep-0 points within {AV2_RANGE_M:g} m in x and y, ground removed "
                  f"({fit['points_scored']} of {fit['points_total']}; {fit['points_in_grid']} inside the grid, "
                  f"outside it the model and the test-time fit predict 0); dynamic = AV2's flag; foreground = "
                  f"inside a labelled object; flow = object motion (ego motion removed). "
                  + ("The model ran on its LiDAR branch alone (the log has no images). " if engine else
                     "No fusion model given: baselines only. ")
                  + f"No method reads the labels (test-time fit loss {fit['loss_first']:.4f} -> "
                    f"{fit['loss_last']:.4f} over {cfg.iters} iterations).\n")
    out = Path(args.json)                       # write_bytes_atomic creates missing folders
    write_bytes_atomic(out, json.dumps(report, indent=2, default=float).encode())
    write_bytes_atomic(out.with_suffix(".md"), "\n".join(md).encode())
    print("\n".join(md))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0
