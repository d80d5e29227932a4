"""``mv4d eval``: run an engine over recorded data through the perception pipeline and score what it
publishes, next to the baselines.

    mv4d eval --checkpoint runs/tiny_synth/last.pt --data runs/data/seed100 runs/data/seed101 \\
              --json runs/tiny_synth/eval.json
    mv4d eval --engine onnxruntime --checkpoint out/mv4d.onnx --data runs/data/seed100 --json out/eval_ort.json

Every sequence of ``--data`` (``mv4d synth`` folders with ``gt.npz``, rosbag2 bags, nuScenes
dataroots or ``synth:SEED:FRAMES``) goes frame by frame, in time order, through a
:class:`~mv4d_core.pipeline.PerceptionPipeline` over the chosen engine, exactly as ``mv4d infer``
and the node run it (temporal state carried). Its published outputs and the baselines are scored by
:class:`~mv4d_core.eval.scoring.Scorer` (the rules are in that module). Writes the JSON and a
Markdown table next to it.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from mv4d_core.utils.threads import restores_torch_threads

HELP = "run an engine through the perception pipeline on recorded data and score its outputs next to baselines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="",
                        help="checkpoint (.pt, e.g. RUN_DIR/last.pt) or exported .onnx for --engine onnxruntime; "
                             "default: the shipped LiDAR fusion weights (the camera-only ones when those are absent)")
    parser.add_argument("--engine", default="torch", choices=("torch", "onnxruntime", "tensorrt"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--data", nargs="+", required=True, metavar="SRC",
                        help="mv4d synth folders, rosbag2 bags, nuScenes dataroots or synth:SEED:FRAMES")
    parser.add_argument("--json", required=True, help="output JSON (a Markdown table is written next to it)")
    parser.add_argument("--md", default=None, help="Markdown output (default: JSON path with .md)")
    parser.add_argument("--frames", default=None,
                        help="frames of each sequence to score: 'a:b' or 'i,j,k' (the pipeline still runs on every "
                             "frame, in order, for its temporal state)")
    parser.add_argument("--nuscenes-version", default=None, help="nuScenes version folder (default: the only v1.0-*)")
    parser.add_argument("--nuscenes-scenes", nargs="+", default=None, help="nuScenes scenes (default: all)")
    parser.add_argument("--topic-map", default=None, help="TopicMap YAML for bag sources")
    parser.add_argument("--cameras", nargs="+", default=None, metavar="CAM",
                        help="score with these cameras only (e.g. drop one of a 6-camera rig); default: all")
    parser.add_argument("--camera-only-checkpoint", default=None,
                        help="camera-only weights scored next to the model as 'camera-only weights' "
                             "(default: the shipped camera-only weights; 'none' to leave them out)")
    parser.add_argument("--lidar-only", action="store_true",
                        help="also score the fusion model with every camera removed ('model, LiDAR only'): how "
                             "the node degrades when the cameras fail")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")


#: The method name of the fusion model run without cameras (``--lidar-only``).
LIDAR_ONLY = "model, LiDAR only"


def frame_interval_s(frames, i: int) -> float | None:
    """Seconds from frame ``i`` to the next one (the previous one for the last frame)."""
    if len(frames) < 2:
        return None
    j = i + 1 if i + 1 < len(frames) else i - 1
    return abs(frames[j].stamp_ns - frames[i].stamp_ns) * 1e-9


def select_cameras(frame, cameras: list[str] | None):
    """``frame`` with only ``cameras`` (in that order; ``[]``: none, the LiDAR-only run); a missing one is a
    ValueError naming it."""
    if cameras is None:
        return frame
    import dataclasses

    missing = [c for c in cameras if c not in frame.camera_names]
    if missing:
        raise ValueError(f"--cameras {missing} not in the data (it has {list(frame.camera_names)})")
    idx = [list(frame.camera_names).index(c) for c in cameras]
    gt = frame.gt
    if gt is not None and (gt.depth_m is not None or gt.semantics is not None):
        gt = dataclasses.replace(gt, depth_m=None if gt.depth_m is None else gt.depth_m[idx],
                                 semantics=None if gt.semantics is None else gt.semantics[idx])
    return dataclasses.replace(
        frame, camera_names=list(cameras), images=frame.images[idx], intrinsics=frame.intrinsics[idx],
        T_base_cam=frame.T_base_cam[idx], gt=gt,
        camera_stamps_ns=None if frame.camera_stamps_ns is None else np.asarray(frame.camera_stamps_ns)[idx])


def evaluate(engines: dict, sequences, frames_spec: str | None = None, scorer=None, baselines: bool = True,
             progress: bool = True):
    """Run each engine of ``engines`` (``{method name: Engine}``) over ``sequences`` through the pipeline
    (every frame, in order; fed :meth:`~mv4d_core.eval.scoring.Scorer.method_input` of it, without its
    cameras for the method :data:`LIDAR_ONLY`) and score the published outputs, plus the baselines once.
    Returns ``(scorer, frames scored)``."""
    from tqdm import tqdm

    from mv4d_core.data.sources import parse_frame_slice
    from mv4d_core.eval.scoring import Scorer, published_prediction
    from mv4d_core.pipeline import PerceptionConfig, PerceptionPipeline

    scorer = scorer or Scorer()
    keep = [set(parse_frame_slice(frames_spec, len(s.frames))) for s in sequences]
    scored = [f for s, k in zip(sequences, keep) for i, f in enumerate(s.frames) if i in k]
    if baselines:
        scorer.fit_constants(scored)
    bar = tqdm(total=len(scored) * len(engines), desc="eval", unit="frame", disable=not progress)
    grid = next(iter(engines.values())).spec.grid
    for seq, k in zip(sequences, keep):
        cfg = PerceptionConfig.from_dict({"camera_names": list(seq.frames[0].camera_names)})
        # new pipelines: each sequence starts afresh
        pipelines = {name: PerceptionPipeline(engine, cfg) for name, engine in engines.items()}
        for i, frame in enumerate(seq.frames):
            seen = scorer.method_input(frame)
            outs = {name: pipe.process(select_cameras(seen, []) if name == LIDAR_ONLY else seen)
                    for name, pipe in pipelines.items()}
            if i not in k:
                continue
            dt = frame_interval_s(seq.frames, i)
            for name, out in outs.items():
                scorer.add(name, frame, published_prediction(out, cfg), dt)
                bar.update(1)
            if baselines:
                scorer.add_baselines(frame, grid, dt)
                scorer.add_lidar_baselines(frame, seq.frames[max(0, i - 4):i][::-1], grid, dt)
    bar.close()
    return scorer, len(scored)


@restores_torch_threads
def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    import torch

    from mv4d_core.data.sources import load_sequences
    from mv4d_core.engines import EngineError, create_engine
    from mv4d_core.eval.report import markdown_report
    from mv4d_core.pipeline import ConfigError, FrameError
    from mv4d_core.utils.user_errors import user_error_message

    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    try:
        engine = create_engine(args.engine, args.checkpoint, args.device, lidar=True)
        engines = {"model": engine}
        if args.lidar_only:
            if engine.spec.lidar is None:
                raise ConfigError("checkpoint", f"--lidar-only needs a LiDAR fusion model; {engine.spec.name!r} "
                                                "is camera-only")
            # its own engine: the pipelines keep separate temporal state
            engines[LIDAR_ONLY] = create_engine(args.engine, args.checkpoint, args.device, lidar=True)
        camera_only = _camera_only_checkpoint(args)
        if camera_only is not None:
            engines["camera-only weights"] = create_engine("torch", str(camera_only), args.device)
        h, w = engine.spec.image_hw
        seqs = load_sequences(args.data, topic_map=args.topic_map, nuscenes_version=args.nuscenes_version,
                              nuscenes_scenes=args.nuscenes_scenes, image_size=(w, h))
        if not seqs or not any(s.frames for s in seqs):
            print(f"mv4d eval: no frames found in {args.data}", file=sys.stderr)
            return 2
        seqs = [s for s in seqs if s.frames]
        for s in seqs:
            s.frames = [select_cameras(f, args.cameras) for f in s.frames]
        for name, e in engines.items():
            n = e.spec.num_cameras
            bad = [s for s in seqs if n is not None and s.frames[0].num_cameras != n]
            if bad:
                cams = list(bad[0].frames[0].camera_names)
                raise ConfigError("camera_names", f"{[s.name for s in bad]} have {len(cams)} cameras {cams} but "
                                                  f"the engine {e.spec.name!r} ({name}) takes {n}; pick {n} with "
                                                  "--cameras")
        scorer, n_frames = evaluate(engines, seqs, args.frames)
    except (EngineError, ConfigError, FrameError, FileNotFoundError, ValueError) as e:
        # One line naming the cause (and the fix, see mv4d_core.utils.user_errors); bag, topic-map and
        # rig errors reach the mv4d entry point, which prints them the same way.
        print(f"mv4d eval: {user_error_message(e) or ' '.join(str(e).split())}", file=sys.stderr)
        return 2
    results = scorer.results()
    report = {"checkpoint": str(args.checkpoint), "engine": engine.spec.name, "data": list(args.data),
              "frames": args.frames, "num_frames": n_frames, "sequences": [s.name for s in seqs],
              "constant_depth_m": scorer.constant_depth_m, "results": results, "notes": scorer.notes(),
              "seconds": time.perf_counter() - t_start}
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, default=_json_default))
    md = markdown(results, report, markdown_report)
    md_path = Path(args.md) if args.md else json_path.with_suffix(".md")
    md_path.write_text(md)
    print(md)
    print(f"wrote {json_path} and {md_path} ({n_frames} frames, {report['seconds']:.1f} s)")
    return 0


def _camera_only_checkpoint(args):
    """The camera-only weights to score next to the model, or None (asked not to, or they are the model)."""
    from pathlib import Path

    from mv4d_core.engines import default_checkpoint

    choice = args.camera_only_checkpoint
    if choice is not None and choice.lower() == "none":
        return None
    path = Path(choice) if choice else default_checkpoint(lidar=False)
    if path is None:
        return None
    if args.engine == "torch" and args.checkpoint and Path(args.checkpoint).resolve() == path.resolve():
        return None
    if args.engine == "torch" and not args.checkpoint and default_checkpoint(lidar=True) == path:
        return None
    return path


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


GROUP_TITLES = {"depth": "Depth vs synthetic GT", "depth_lidar": "Depth vs projected LiDAR",
                "depth_lidar_heldout_rings": "Depth vs the held-out (even) LiDAR rings",
                "occupancy": "Occupancy (full grid)", "occupancy_selfocc": "Occupancy (SelfOcc protocol)",
                "flow": "Scene flow (LiDAR points)"}


def markdown(results: dict, report: dict, markdown_report) -> str:
    """One ``markdown_report`` section per metric group (they share the method rows)."""
    parts = [f"# mv4d eval: {report.get('engine') or report['checkpoint']}", "",
             f"data: {', '.join(map(str, report['data']))}; {report['num_frames']} frames; "
             f"sequences {report['sequences']}", ""]
    parts.append(markdown_groups(results, markdown_report))
    parts += ["## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(parts).rstrip() + "\n"


def markdown_groups(results: dict, markdown_report, level: int = 2) -> str:
    """The metric-group sections of ``results`` as Markdown, headings at ``level``."""
    parts = []
    for group, title in GROUP_TITLES.items():
        key = "occupancy" if group.startswith("occupancy") else ("depth" if group.startswith("depth") else group)
        view = {m: {key: r[group]} for m, r in results.items() if group in r}
        if view:
            text = markdown_report(view, title=title, per_class=False)
            text = text.replace("\n## ", "\n" + "#" * (level + 1) + " ").replace(f"# {title}", "#" * level + f" {title}", 1)
            parts.append(text)
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mv4d_core.eval.command", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
