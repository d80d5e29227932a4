"""``mv4d eval``: score a checkpoint on synthetic GT / real LiDAR next to the trivial baselines.

    mv4d eval --checkpoint runs/tiny_synth/last.pt --data runs/data/seed100 runs/data/seed101 \\
              --json runs/tiny_synth/eval.json

Per frame of every sequence in ``--data`` (``mv4d synth`` folders with ``gt.npz``, rosbag2 bags,
nuScenes dataroots or ``synth:SEED:FRAMES``), the model runs in time order (temporal state carried)
and is scored with H4's metrics (:mod:`mv4d_core.eval.metrics`):

* ``occupancy`` / ``occupancy_selfocc``: geometric occupancy (the model's rule, SDF <= margin, and
  SelfOcc's SDF <= 0, on the SDF resampled to the GT grid) vs the synthetic GT over GT-known voxels,
  as is and under the SelfOcc protocol (top 1.6 m of z layers and a
  2.4 m x/y border forced empty, i.e. 4 layers / 6 voxels on Occ3D); semantic mIoU only when the
  model has a semantic head with the mv4d classes;
* ``depth`` (vs synthetic GT depth) and ``depth_lidar`` (vs LiDAR projected into each camera at the
  frame's image size): the published depth-head map, bilinearly upsampled; metric and per-image
  median-scaled;
* ``flow``: per-LiDAR-point displacement to the next frame (flow volume sampled at the points
  times the frame interval) vs ``gt.point_flow_m`` (object motion, ego removed), dynamic/static split.

Baselines from :mod:`mv4d_core.eval.baselines` go through the same code: constant depth (median
of the evaluated targets, flagged — this favours the baseline), ground plane, their minimum,
all-free and ground-slab occupancy, zero flow. Writes the JSON and a Markdown table next to it.
"""

from __future__ import annotations

import argparse
import sys

HELP = "evaluate a checkpoint (occupancy IoU, depth vs GT / LiDAR, scene flow) next to trivial baselines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by mv4d train (RUN_DIR/last.pt)")
    parser.add_argument("--data", nargs="+", required=True, metavar="SRC",
                        help="mv4d synth folders, rosbag2 bags, nuScenes dataroots or synth:SEED:FRAMES")
    parser.add_argument("--json", required=True, help="output JSON (a Markdown table is written next to it)")
    parser.add_argument("--md", default=None, help="Markdown output (default: JSON path with .md)")
    parser.add_argument("--frames", default=None,
                        help="frames of each sequence to score: 'a:b' or 'i,j,k' (the model still runs on every "
                             "frame, in order, for its temporal state)")
    parser.add_argument("--nuscenes-version", default=None, help="nuScenes version folder (default: the only v1.0-*)")
    parser.add_argument("--nuscenes-scenes", nargs="+", default=None, help="nuScenes scenes (default: all)")
    parser.add_argument("--topic-map", default=None, help="TopicMap YAML for bag sources")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")


def occupancy_protocol_params(grid) -> tuple[int, int]:
    """SelfOcc's forced-empty ``(top z layers, x/y border voxels)`` scaled from Occ3D's 4 x 0.4 m and
    6 x 0.4 m to ``grid``'s voxel size."""
    return max(0, int(round(1.6 / grid.voxel_size[2]))), max(0, int(round(2.4 / grid.voxel_size[0])))


#: Method name of SelfOcc's occupancy rule applied to the model's SDF (``s <= 0`` at the GT voxel
#: centres). The "model" row is the model's own published occupancy (``s <= margin``, see
#: :attr:`~mv4d_core.models.config.ModelConfig.occupancy_margin_m`), the rule it was trained with.
SELFOCC_RULE = "model (SelfOcc rule: sdf <= 0)"


class _Evaluator:
    """Accumulates every metric group for the model and the baselines."""

    def __init__(self, dynamic_threshold_m: float = 0.05):
        from mv4d_core.eval.metrics import DepthMetrics, FlowMetrics, OccupancyMetrics

        self.depth = {m: DepthMetrics() for m in ("model", "constant", "ground_plane", "ground_plane_or_constant")}
        self.depth_lidar = {m: DepthMetrics() for m in self.depth}
        binary = dict(num_classes=2, free_class=0, class_names=["free", "occupied"], ignore_index=None)
        self.occ = {m: OccupancyMetrics(**binary) for m in ("model", SELFOCC_RULE, "all_free", "ground_slab")}
        self.occ_selfocc = {m: OccupancyMetrics(**binary) for m in self.occ}
        self.occ_semantic: dict = {}
        self.flow = {m: FlowMetrics(dynamic_threshold_m) for m in ("model", "zero")}


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    import numpy as np
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from mv4d_core.data.classes import FREE, IGNORE, NUM_CLASSES, ROAD
    from mv4d_core.eval.baselines import (ConstantDepthBaseline, all_free_occupancy, ground_plane_depth,
                                          ground_slab_occupancy)
    from mv4d_core.eval.metrics import OccupancyMetrics, resample_to_grid, selfocc_protocol_occupied
    from mv4d_core.eval.report import markdown_report
    from mv4d_core.losses.lidar_depth import lidar_depth_image, project_lidar_to_cameras
    from mv4d_core.models import inputs_from_frames
    from mv4d_core.pipeline.engines import load_checkpoint_model
    from mv4d_core.render import sample_volume
    from mv4d_core.training.config import DataConfig
    from mv4d_core.training.data import load_sequences, parse_frame_slice

    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    model, cfg = load_checkpoint_model(args.checkpoint)
    model.eval()
    data_cfg = DataConfig(sources=list(args.data), topic_map=args.topic_map, nuscenes_version=args.nuscenes_version,
                          nuscenes_scenes=args.nuscenes_scenes)
    seqs = load_sequences(data_cfg, image_size=(cfg.image_width, cfg.image_height))
    if not seqs or not any(s.frames for s in seqs):
        print(f"no frames found in {args.data}", file=sys.stderr)
        return 2
    ev = _Evaluator()
    semantic = cfg.num_semantic_classes == NUM_CLASSES
    if semantic:
        ev.occ_semantic = {"model": OccupancyMetrics()}
    top, border = occupancy_protocol_params(cfg.grid)
    margin = cfg.occupancy_margin_m
    notes = [f"occupancy: geometric IoU over GT-known voxels; 'model' = the model's published occupancy "
             f"(SDF <= {margin:g} m at the GT voxel centres: the surface passes through the voxel, the rule the "
             f"focal occupancy loss trains); '{SELFOCC_RULE}' = SelfOcc's threshold on the same SDF; the "
             f"SelfOcc protocol also forces the top {top} z layers and a {border}-voxel x/y border empty "
             f"(Occ3D: 4 / 6)",
             "depth: depth-head map (stride 4) bilinearly upsampled to the frame's image size; GT kept 1-80 m",
             "constant-depth baseline: median of the evaluated frames' targets (fit on eval data; favours it)"]
    if not semantic:
        notes.append("mIoU: n/a — the model has no semantic head (num_semantic_classes = 0), only geometry")

    # Constant depth baselines: one per target kind, fit on the evaluated frames.
    def lidar_target(f):
        if f.lidar_xyz is None or len(f.lidar_xyz) == 0:
            return None
        h, w = f.image_size
        proj = project_lidar_to_cameras(f.lidar_xyz.astype(np.float64), f.intrinsics, f.T_base_cam, w, h)
        return lidar_depth_image(proj, w, h)

    scored = []
    for s in seqs:
        keep = set(parse_frame_slice(args.frames, len(s.frames)))
        scored.append(keep)
    all_scored = [f for s, keep in zip(seqs, scored) for i, f in enumerate(s.frames) if i in keep]
    gt_depths = [f.gt.depth_m for f in all_scored if f.gt is not None and f.gt.depth_m is not None]
    lidar_depths = {id(f): lidar_target(f) for f in all_scored}
    const_gt = ConstantDepthBaseline().fit(gt_depths) if gt_depths else None
    valid_lidar = [d for d in lidar_depths.values() if d is not None]
    const_lidar = ConstantDepthBaseline().fit(valid_lidar) if valid_lidar else None

    n_frames = 0
    bar = tqdm(total=len(all_scored), desc="eval", unit="frame")
    with torch.no_grad():
        for s, keep in zip(seqs, scored):
            prev_volume = None
            for i, f in enumerate(s.frames):
                prev = [s.frames[i - 1]] if i > 0 else None
                inp = inputs_from_frames([f], cfg, prev_frames=prev)
                if cfg.temporal and prev_volume is not None:
                    inp = inp.with_previous(prev_volume, inp.T_prev_cur)
                out = model(inp)
                prev_volume = out.state_volume
                if i not in keep:
                    continue
                n_frames += 1
                h, w = f.image_size
                depth = F.interpolate(out.depth_m.float(), size=(h, w), mode="bilinear",
                                      align_corners=False)[0].numpy()             # (N, h, w)
                plane = ground_plane_depth(f.intrinsics, f.T_base_cam, h, w, cfg.ground_z_m)
                for target, acc, const in ((f.gt.depth_m if f.gt is not None else None, ev.depth, const_gt),
                                           (lidar_depths[id(f)], ev.depth_lidar, const_lidar)):
                    if target is None:
                        continue
                    for c, name in enumerate(f.camera_names):
                        acc["model"].update(depth[c], target[c], camera=name)
                        acc["constant"].update(const.predict(target[c].shape), target[c], camera=name)
                        acc["ground_plane"].update(plane[c], target[c], camera=name)
                        acc["ground_plane_or_constant"].update(np.minimum(plane[c], const.depth_m), target[c],
                                                               camera=name)
                gt = f.gt
                if gt is not None and gt.occupancy is not None:
                    ggrid = gt.occupancy_grid or cfg.grid
                    sdf = out.sdf[0].numpy().astype(np.float64)
                    if ggrid != cfg.grid:
                        sdf = resample_to_grid(sdf, cfg.grid, ggrid)
                    known = gt.occupancy != IGNORE
                    gt_bin = (gt.occupancy != FREE).astype(np.int64)
                    slab = (ground_slab_occupancy(ggrid, FREE, ROAD, cfg.ground_z_m) != FREE).astype(np.int64)
                    free = (all_free_occupancy(ggrid, FREE) != FREE).astype(np.int64)
                    preds = {"model": (sdf <= margin).astype(np.int64), SELFOCC_RULE: (sdf <= 0).astype(np.int64),
                             "all_free": free, "ground_slab": slab}
                    for name, pred in preds.items():
                        ev.occ[name].update(pred, gt_bin, known)
                        forced = selfocc_protocol_occupied(np.where(pred > 0, -1.0, 1.0), top, border)
                        ev.occ_selfocc[name].update(forced.astype(np.int64), gt_bin, known)
                    if semantic:
                        labels = out.semantic_logits[0].argmax(0).numpy()
                        if ggrid != cfg.grid:
                            labels = None  # nearest resampling of labels is not provided; skip
                        if labels is not None:
                            ev.occ_semantic["model"].update(np.where(sdf <= margin, labels, FREE), gt.occupancy, known)
                if gt is not None and gt.point_flow_m is not None and not gt.point_flow_includes_ego \
                        and f.lidar_xyz is not None and len(f.lidar_xyz) == len(gt.point_flow_m):
                    j = i + 1 if i + 1 < len(s.frames) else i - 1
                    dt = abs(s.frames[j].stamp_ns - f.stamp_ns) * 1e-9 if j >= 0 else 0.1
                    pts = torch.from_numpy(f.lidar_xyz.astype(np.float32))
                    lo, hi = np.asarray(cfg.grid.range_min), np.asarray(cfg.grid.range_max)
                    inside = np.all((f.lidar_xyz >= lo) & (f.lidar_xyz < hi), axis=1)
                    v = sample_volume(out.flow_mps.float(), pts[None], cfg.grid)[0].numpy()
                    ev.flow["model"].update(v * dt, gt.point_flow_m, valid=inside)
                    ev.flow["zero"].update(np.zeros_like(gt.point_flow_m), gt.point_flow_m, valid=inside)
                bar.update(1)
    bar.close()

    def pick(groups: dict) -> dict:
        """``compute()`` of every accumulator that saw data."""
        out = {}
        for m, acc in groups.items():
            res = acc.compute()
            if _has_data(res):
                out[m] = res
        return out

    results: dict = {}
    for group, accs in (("depth", ev.depth), ("depth_lidar", ev.depth_lidar), ("occupancy", ev.occ),
                        ("occupancy_selfocc", ev.occ_selfocc), ("occupancy_semantic", ev.occ_semantic),
                        ("flow", ev.flow)):
        for m, val in pick(accs).items():
            method = m if m.startswith("model") else f"baseline: {m}"
            results.setdefault(method, {})[group] = val
    report = {"checkpoint": str(args.checkpoint), "data": list(args.data), "frames": args.frames,
              "num_frames": n_frames, "sequences": [s.name for s in seqs], "model_config": cfg.to_dict(),
              "constant_depth_m": {"gt": const_gt.depth_m if const_gt else None,
                                   "lidar": const_lidar.depth_m if const_lidar else None},
              "selfocc_protocol": {"top_layers": top, "border_voxels": border},
              "results": results, "notes": notes, "seconds": time.perf_counter() - t_start}
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, default=_json_default))
    md = _markdown(results, report, markdown_report)
    md_path = Path(args.md) if args.md else json_path.with_suffix(".md")
    md_path.write_text(md)
    print(md)
    print(f"wrote {json_path} and {md_path} ({n_frames} frames, {report['seconds']:.1f} s)")
    return 0


def _has_data(res: dict) -> bool:
    """Whether a computed metric dict (depth, occupancy or flow) is based on any data."""
    if "num_images" in res:
        return res["num_images"] > 0
    if "num_frames" in res:
        return res["num_frames"] > 0
    if "all" in res:
        return res["all"]["num_points"] > 0
    return True


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _markdown(results: dict, report: dict, markdown_report) -> str:
    """One H4 ``markdown_report`` section per metric group (they share the method rows)."""
    parts = [f"# mv4d eval: {report['checkpoint']}", "",
             f"data: {', '.join(report['data'])}; {report['num_frames']} frames; sequences {report['sequences']}", ""]
    for group, title in (("depth", "Depth vs synthetic GT"), ("depth_lidar", "Depth vs projected LiDAR"),
                         ("occupancy", "Occupancy (full grid)"),
                         ("occupancy_selfocc", "Occupancy (SelfOcc protocol)"),
                         ("occupancy_semantic", "Semantic occupancy"), ("flow", "Scene flow (LiDAR points)")):
        key = "occupancy" if group.startswith("occupancy") else ("depth" if group.startswith("depth") else group)
        view = {m: {key: r[group]} for m, r in results.items() if group in r}
        if view:
            text = markdown_report(view, title=title, per_class=group == "occupancy_semantic")
            parts.append(text.replace(f"# {title}", f"## {title}", 1).replace("\n## ", "\n### "))
    parts += ["## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mv4d_core.eval.command", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
