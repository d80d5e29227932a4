"""``mv4d demo``: the main job end to end, on an unseen synthetic drive (and real nuScenes when present).

Steps (each the same code path as its own CLI command, called in-process):

1. ``mv4d synth`` -> ``OUT/synthetic/bag`` + ``gt.npz`` (seed 1000+: never a training seed);
2. ``mv4d infer`` with the checkpoint (default: the weights shipped in ``mv4d_core/weights/``)
   -> ``OUT/synthetic/output_bag`` (sensor topics + every output topic, playable in RViz);
3. the output bag is decoded back and scored against the exact ground truth (depth, occupancy,
   flow) next to the baselines, through :class:`mv4d_core.eval.scoring.Scorer`, the scoring path of
   ``mv4d eval`` (so ``mv4d eval`` on the same data gives the same numbers);
4. with real data (``--nuscenes DATAROOT`` or ``<shared>/data/nuscenes_minivis/data``):
   ``mv4d convert nuscenes`` -> ``mv4d infer`` -> depth scored against the projected LiDAR;
5. ``OUT/report.md``, ``OUT/index.html`` (self-contained), ``OUT/metrics.json``, PNG panels, a PLY
   of the predicted point cloud and a point-cloud render per dataset.

Without shipped weights the demo stops with a message saying how to get them; ``--random-init``
runs the plumbing with an untrained model and labels every output UNTRAINED.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

HELP = "run the main job: synthetic drive (+ nuScenes if present) -> infer -> evaluate -> report folder"

#: Marker file: a folder holding it was written by ``mv4d demo`` and may be replaced by a new run.
MARKER = ".mv4d_demo"
#: Synthetic seeds at or above this are never used for training (training recipes use small seeds).
FIRST_UNSEEN_SEED = 1000
UNTRAINED_LABEL = "UNTRAINED (--random-init): random weights, the numbers only test the plumbing"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="report folder (created; a previous demo run there is replaced)")
    parser.add_argument("--checkpoint", default="", help="model checkpoint (default: mv4d_core/weights/*.pt)")
    parser.add_argument("--random-init", action="store_true",
                        help="use an untrained randomly initialised tiny model (tests/plumbing only; labelled)")
    parser.add_argument("--frames", type=int, default=12, help="synthetic frames (10 Hz)")
    parser.add_argument("--seed", type=int, default=FIRST_UNSEEN_SEED,
                        help=f"synthetic world seed (>= {FIRST_UNSEEN_SEED}: unseen by training)")
    parser.add_argument("--nuscenes", default=None, help="nuScenes dataroot (holding samples/ and v1.0-*/)")
    parser.add_argument("--shared", default=None,
                        help="developers' shared folder; <shared>/data/nuscenes_minivis/data is used if present")
    parser.add_argument("--nuscenes-frames", type=int, default=6, help="keyframes of the real scene to run")
    parser.add_argument("--nuscenes-image-size", default="704x396", help="resize nuScenes cameras to WxH first")
    parser.add_argument("--no-real", action="store_true", help="skip the real-data branch even if data is found")
    parser.add_argument("--render", choices=("auto", "open3d", "matplotlib", "none"), default="auto",
                        help="point-cloud render backend (auto: open3d, else matplotlib)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--docs", default=None, metavar="DIR",
                        help="also write small README pictures from the SYNTHETIC run to DIR (demo_panels.png, "
                             "demo_pointcloud.png); refused with --random-init")


class DemoError(RuntimeError):
    """A step failed in a way the user can fix; the message says how."""


def _sub_args(module, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` with a command module's own parser: the same defaults as its CLI."""
    p = argparse.ArgumentParser(prog=f"mv4d {module.__name__.rsplit('.', 1)[-1]}")
    module.add_arguments(p)
    return p.parse_args(argv)


def _prepare_out(out) -> None:
    import shutil

    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise DemoError(f"{out} exists and was not written by `mv4d demo` (no {MARKER}); choose another --out")
        # Replace only what a demo writes, never anything else a user put there.
        for name in ("synthetic", "nuscenes", "report.md", "index.html", "metrics.json", "untrained_random_init.pt"):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by `mv4d demo`; the next run replaces this folder's demo outputs\n")


def resolve_checkpoint(args, out):
    """``(path, label)`` of the weights to run; raises :class:`DemoError` naming the missing file."""
    from pathlib import Path

    if args.random_init:
        import torch

        from mv4d_core.models import ModelConfig, build_model
        from mv4d_core.training.checkpoint import save_atomic

        cfg = ModelConfig.tiny()
        torch.manual_seed(0)
        path = save_atomic({"model_config": cfg.to_dict(), "model": build_model(cfg).state_dict(),
                            "note": UNTRAINED_LABEL}, out / "untrained_random_init.pt")
        return path, UNTRAINED_LABEL
    if args.checkpoint:
        path = Path(args.checkpoint)
        if not path.is_file():
            raise DemoError(f"--checkpoint {path} does not exist")
        return path, f"checkpoint {path}"
    from mv4d_core.engines import default_checkpoint

    path = default_checkpoint()
    if path is None:
        folder = Path(__file__).resolve().parents[1] / "weights"
        raise DemoError(
            f"no shipped weights: {folder}/*.pt is missing. Train them with `mv4d train` (see training/ for the "
            f"recipe) and copy the checkpoint to {folder}/, or pass --checkpoint PATH. `--random-init` runs the "
            "demo with an untrained model (plumbing test; every output is labelled UNTRAINED).")
    return path, f"shipped weights {path.name}"


def fusion_companion(args, ckpt, model_cfg):
    """The shipped fusion weights, run next to the shipped camera-only ones (a :class:`DemoModel`), or None
    (a checkpoint was given, they are not shipped, or the main model already takes the LiDAR)."""
    if args.checkpoint or args.random_init or model_cfg.lidar.enabled:
        return None
    from mv4d_core.engines import load_checkpoint_model
    from mv4d_core.engines.checkpoint import FUSION_WEIGHTS, WEIGHTS_DIR

    path = WEIGHTS_DIR / FUSION_WEIGHTS
    if not path.is_file():
        return None
    _, cfg = load_checkpoint_model(path)
    return DemoModel(path, cfg, f"mv4d fusion ({path.name})", f"shipped fusion weights {path.name}", "fusion")


def trained_nuscenes_scenes(path) -> list[str]:
    """nuScenes scenes the checkpoint's training config names (empty when none or unknown)."""
    from mv4d_core.engines import load_checkpoint as load

    try:
        ckpt = load(path)
    except (FileNotFoundError, ValueError):
        return []
    data = ((ckpt.get("config") or {}).get("data") or {}) if isinstance(ckpt, dict) else {}
    return [str(x) for x in data.get("nuscenes_scenes") or []]


def pick_real_scene(scene_names: list[str], trained: list[str]) -> str:
    """The first scene the weights were not trained on, so real-data numbers are on unseen data;
    the first scene when every scene was used for training."""
    unseen = [name for name in scene_names if name not in set(trained)]
    return (unseen or list(scene_names))[0]


def checkpoint_provenance(path, seed: int, real_root=None) -> tuple[list[str], list[str]]:
    """``(facts, warnings)`` from a trainer checkpoint: training step and data, and whether the demo's
    synthetic seed or real data were part of training (then those numbers are on training data)."""
    from pathlib import Path

    from mv4d_core.engines import load_checkpoint as load

    try:
        ckpt = load(path)
    except (FileNotFoundError, ValueError) as e:
        return [], [f"cannot read training provenance: {e}"]
    facts, warnings = [], []
    if isinstance(ckpt.get("step"), int):
        facts.append(f"trained for {ckpt['step']} steps")
    data = (ckpt.get("config") or {}).get("data") or {}
    seeds = list(data.get("synth_seeds") or [])
    sources = [str(s) for s in data.get("sources") or []]
    if seeds or sources:
        facts.append(f"training data: synthetic seeds {seeds or 'none'}, sources "
                     f"{[Path(s).name for s in sources] or 'none'}")
    if seed in seeds:
        warnings.append(f"synthetic seed {seed} was a TRAINING seed of this checkpoint: its numbers are not on unseen "
                        "data (pick another --seed)")
    trained_scenes = data.get("nuscenes_scenes")
    if real_root is not None and any("nuscenes" in s.lower() or Path(s).name == Path(real_root).name
                                      for s in sources):
        if trained_scenes:
            facts.append(f"trained on nuScenes scenes {list(trained_scenes)}: the demo runs a scene outside them "
                         "when the dataroot has one")
        else:
            warnings.append("this checkpoint was trained on nuScenes data that may include the demo's real scene: "
                            "the real-data depth numbers may be on training data")
    if not seeds and not sources and "config" not in ckpt:
        facts.append("checkpoint carries no training-data record")
    return facts, warnings


def find_nuscenes(args):
    """``(dataroot, version, reason)``: the real data to use, or ``(None, None, why not)``."""
    from pathlib import Path

    if args.no_real:
        return None, None, "--no-real given"
    candidates = []
    if args.nuscenes:
        candidates.append(Path(args.nuscenes))
    elif args.shared:
        candidates.append(Path(args.shared) / "data" / "nuscenes_minivis" / "data")
    if not candidates:
        return None, None, "no --nuscenes DATAROOT given and no --shared folder"
    root = candidates[0]
    if not root.is_dir():
        if args.nuscenes:
            raise DemoError(f"--nuscenes {root} is not a folder")
        return None, None, f"{root} not found (the nuScenes sample only exists next to the developers' checkout)"
    versions = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "scene.json").is_file())
    if not versions:
        raise DemoError(f"{root} has no v1.0-*/scene.json table folder")
    preferred = [v for v in ("v1.0-mini", "v1.0-mini-extract", "v1.0-trainval") if v in versions]
    return root, (preferred or versions)[0], ""


def _with_gt(frames, gts: dict):
    import dataclasses

    return [dataclasses.replace(f, gt=gts.get(int(f.stamp_ns))) for f in frames]


def _middle(frames):
    return frames[len(frames) // 2]


@dataclass
class DemoModel:
    """One set of weights the demo runs: ``tag`` names its files (``""`` for the main model),
    ``method`` its row in the tables, ``label`` where it comes from."""

    ckpt: object
    model_cfg: object
    method: str
    label: str
    tag: str = ""

    def file(self, stem: str, suffix: str = ".png") -> str:
        return f"{stem}{'_' + self.tag if self.tag else ''}{suffix}"


def run_dataset(name: str, in_bag, work, models: list, frames_gt, render: str, device: str, train_frames=None,
                real: bool = False, log=print):
    """For each model: infer -> decode the output bag; then every model and the baselines (classical
    LiDAR ones included) are scored together, as ``mv4d eval`` scores, and drawn. Returns a :class:`Section`."""
    import time

    import numpy as np

    from mv4d_core.data.rosbag_io import read_frames
    from mv4d_core.demo import panels
    from mv4d_core.demo.evaluate import evaluate_outputs
    from mv4d_core.demo.outputs_bag import read_outputs
    from mv4d_core.demo.pointcloud_render import render_points, write_ply
    from mv4d_core.demo.report import Section
    from mv4d_core.eval.command import markdown_groups
    from mv4d_core.eval.report import markdown_report
    from mv4d_core.eval.scoring import headline, lidar_depth_target
    from mv4d_core.pipeline import infer_command

    decoded = []
    frames = None
    for m in models:
        out_bag = work / m.file("output_bag", "")
        t = time.perf_counter()
        rc = infer_command.run(_sub_args(infer_command, ["--checkpoint", str(m.ckpt), "--in", str(in_bag),
                                                         "--out", str(out_bag), "--device", device]))
        if rc != 0:
            raise DemoError(f"`mv4d infer` failed on {in_bag} with {m.method} (exit {rc}); see its messages above")
        log(f"[{name}] mv4d infer ({m.method}) -> {out_bag} ({time.perf_counter() - t:.1f} s)")
        if frames is None:
            frames = list(read_frames(out_bag))
            if frames_gt is not None:
                frames = _with_gt(frames, frames_gt)
        decoded.append((m, out_bag, read_outputs(out_bag, m.model_cfg.grid)))
    grid = models[0].model_cfg.grid
    ev = evaluate_outputs(frames, [(m.method, outs, m.model_cfg.grid) for m, _, outs in decoded], grid, train_frames)
    sec = Section(title=name, results={"from_output_bag": ev.results}, notes=list(ev.notes))
    sec.intro = [m.label for m in models]
    sec.intro.append(f"input bag `{in_bag.relative_to(work.parent).as_posix()}`, output bags "
                     + ", ".join(f"`{b.relative_to(work.parent).as_posix()}`" for _, b, _ in decoded)
                     + " (`ros2 bag play` them with config/mv4d.rviz)")
    sec.intro.append(f"{ev.frames} frame(s) evaluated; panels show frame {len(frames) // 2} "
                     f"(stamp {_middle(frames).stamp_ns})")
    for m, _, _ in decoded:
        summary = ", ".join(f"{k} {v:.3f}" for k, v in headline(ev.results, m.method).items())
        log(f"[{name}] {m.method}, from the output bag: {summary}")
        sec.intro.append(f"headline ({m.method}, from the output bag): {summary or 'no metric available'}")
    sec.intro.append("baselines (classical LiDAR ones included) in the tables")
    sec.metrics_md = ("# Scored from the output bags (what the node publishes: thresholded occupancy, published "
                      "flow and depth topics; `mv4d eval` scores the same way)\n\n"
                      + markdown_groups(ev.results, markdown_report))

    frame = _middle(frames)
    ref = frame.gt.depth_m if frame.gt is not None and frame.gt.depth_m is not None else lidar_depth_target(frame)
    gt = frame.gt
    for m, _, outputs in decoded:
        out = outputs.for_frame(frame)
        tag = "UNTRAINED — " if m.label == UNTRAINED_LABEL else ""
        who = f"{tag}{name}, {m.method}"
        png = panels.camera_depth_panel(frame, out.depth_m, work / m.file("cameras_depth"),
                                        f"{who}: cameras and predicted depth", reference=ref,
                                        reference_label="LiDAR depth (projected)" if real else "GT depth")
        sec.images.append((f"{m.method}: cameras with predicted depth"
                           + (" and projected LiDAR" if real else " and GT depth"), png))
        png = panels.bev_occupancy_panel(out.occupied, None, m.model_cfg.grid, work / m.file("bev_occupancy"),
                                         f"{who}: occupancy, bird's-eye view (x forward up)",
                                         gt.occupancy if gt is not None else None,
                                         gt.occupancy_grid if gt is not None else None)
        sec.images.append((f"{m.method}: BEV occupancy" + (" vs ground truth" if gt is not None else ""), png))
        png = panels.flow_panel(out.occupied, out.flow_mps, m.model_cfg.grid, work / m.file("flow_bev"),
                                f"{who}: scene flow, bird's-eye view (x forward up)",
                                gt.occupancy if gt is not None else None,
                                gt.voxel_flow_mps if gt is not None else None,
                                gt.occupancy_grid if gt is not None else None)
        sec.images.append((f"{m.method}: BEV flow arrows" + (" vs ground truth" if gt is not None else ""), png))
        ply = write_ply(work / m.file("predicted_points", ".ply"), out.points_xyz, out.points_rgb,
                        comment=f"mv4d predicted point cloud, base_link, stamp {frame.stamp_ns}\n{m.label}")
        sec.intro.append(f"predicted point cloud of that frame ({m.method}): "
                         f"`{ply.relative_to(work.parent).as_posix()}` ({len(out.points_xyz)} points, base_link)")
        if render != "none":
            t = time.perf_counter()
            vox = m.model_cfg.grid.index_to_metric(np.argwhere(out.occupied))
            vox_rgb = panels.height_rgb(vox[:, 2], m.model_cfg.grid) if len(vox) else np.zeros((0, 3), np.uint8)
            res = render_points(work / m.file("pointcloud_render"),
                                [(out.points_xyz, out.points_rgb, 4.0), (vox, vox_rgb, 3.0)],
                                title=f"{who}: predicted points + occupied voxels", backend=render)
            if res.note:
                log(f"[{name}] NOTE: {res.note}")
                sec.notes.append(res.note)
            sec.images.append((f"{m.method}: predicted point cloud (image colours) and occupied voxel centres "
                               f"(height colours), rendered by {res.backend}", res.path))
            log(f"[{name}] point-cloud render ({res.backend}) {time.perf_counter() - t:.1f} s")
    if render == "none":
        sec.notes.append("point-cloud render skipped (--render none)")
    return sec


def run(args: argparse.Namespace) -> int:
    import platform
    import time
    from datetime import datetime, timezone
    from pathlib import Path

    t_start = time.perf_counter()
    done: list[str] = []
    skipped: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.frames < 2:
        print("mv4d demo: --frames must be >= 2 (flow needs a previous frame)", file=sys.stderr)
        return 2
    if args.docs and args.random_init:
        print("mv4d demo: --docs refused with --random-init (README pictures of an untrained model mislead)",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        _prepare_out(out)
        ckpt, label = resolve_checkpoint(args, out)
        real_root, real_version, real_reason = find_nuscenes(args)
    except DemoError as e:
        print(f"mv4d demo: {e}", file=sys.stderr)
        return 2
    if label == UNTRAINED_LABEL:
        log(f"mv4d demo: *** {UNTRAINED_LABEL} ***")

    import torch

    from mv4d_core.data.synth import generate_sequence, load_gt_sidecar
    from mv4d_core.data.synth import command as synth_command
    from mv4d_core.demo.report import write_report
    from mv4d_core.engines import EngineError, load_checkpoint_model

    try:
        _model, model_cfg = load_checkpoint_model(ckpt)
        del _model
    except EngineError as e:
        print(f"mv4d demo: {e}", file=sys.stderr)
        return 2
    method = "mv4d (untrained)" if label == UNTRAINED_LABEL else f"mv4d ({Path(ckpt).name})"
    models = [DemoModel(ckpt, model_cfg, method, label)]
    fusion = fusion_companion(args, ckpt, model_cfg)
    if fusion is not None:
        models.append(fusion)
        log(f"mv4d demo: also running {fusion.method} (the LiDAR as an input) side by side")
    facts, warnings = ([], []) if label == UNTRAINED_LABEL else checkpoint_provenance(ckpt, args.seed, real_root)
    for w in warnings:
        log(f"mv4d demo: WARNING {w}")
    if args.seed < FIRST_UNSEEN_SEED:
        log(f"mv4d demo: WARNING --seed {args.seed} < {FIRST_UNSEEN_SEED} may be a training seed")
    sections = []
    try:
        # ---- synthetic
        syn = out / "synthetic"
        size = "tiny" if model_cfg.image_width <= 176 else "base"
        grid_name = "tiny" if model_cfg.grid.shape[0] <= 100 else "occ3d"
        t = time.perf_counter()
        rc = synth_command.run(_sub_args(synth_command, ["--out", str(syn), "--frames", str(args.frames),
                                                         "--seed", str(args.seed), "--size", size,
                                                         "--grid", grid_name]))
        if rc != 0:
            raise DemoError(f"`mv4d synth` failed (exit {rc})")
        log(f"[synthetic] mv4d synth: {args.frames} frames, seed {args.seed}, {size} cameras -> {syn / 'bag'} "
            f"({time.perf_counter() - t:.1f} s)")
        done.append(f"synthetic drive: {args.frames} frames, seed {args.seed} (unseen by training), exact GT")
        gts = load_gt_sidecar(syn)
        # Fit the constant-depth baseline on a training seed, not on the evaluated drive.
        train_frames = generate_sequence(2, seed=0, size=size)
        sec = run_dataset("synthetic", syn / "bag", syn, models, gts, args.render, args.device,
                          train_frames=train_frames, log=log)
        sec.intro.insert(0, f"procedural street, seed {args.seed}, {args.frames} frames at 10 Hz, "
                            f"{size} cameras (6), exact ground truth (`synthetic/gt.npz`)")
        sections.append(sec)
        done.append("synthetic: infer, evaluation vs exact GT + baselines, panels, PLY")

        # ---- real data
        if real_root is None:
            skipped.append(f"real-data branch: {real_reason}")
            log(f"[nuscenes] skipped: {real_reason}")
        else:
            from mv4d_core.data import convert_command
            from mv4d_core.data.nuscenes import NuScenesReader

            nus = out / "nuscenes"
            nus.mkdir(parents=True, exist_ok=True)
            scene = pick_real_scene(NuScenesReader.open(real_root, real_version, "json").scene_names,
                                    trained_nuscenes_scenes(ckpt))
            t = time.perf_counter()
            rc = convert_command.run(_sub_args(convert_command, [
                "nuscenes", "--dataroot", str(real_root), "--version", real_version, "--out", str(nus / "input_bag"),
                "--scene", scene, "--max-frames", str(args.nuscenes_frames),
                "--image-size", args.nuscenes_image_size, "--backend", "json"]))
            if rc != 0:
                raise DemoError(f"`mv4d convert nuscenes` failed on {real_root} (exit {rc})")
            log(f"[nuscenes] mv4d convert nuscenes: {scene}, {args.nuscenes_frames} keyframes -> {nus / 'input_bag'} "
                f"({time.perf_counter() - t:.1f} s)")
            sec = run_dataset("nuscenes", nus / "input_bag", nus, models, None, args.render, args.device,
                              real=True, log=log)
            sec.intro.insert(0, f"real nuScenes {real_version} scene {scene}, {args.nuscenes_frames} keyframes "
                                f"(2 Hz), cameras resized to {args.nuscenes_image_size}; reference depth = LiDAR "
                                "projected into the cameras (no occupancy / flow ground truth)")
            sec.notes.append("nuScenes images stay in this folder only (CC BY-NC-SA); never commit them")
            sections.append(sec)
            done.append(f"nuScenes {scene}: convert, infer, depth vs projected LiDAR + baselines, panels, PLY")
    except DemoError as e:
        print(f"mv4d demo: {e}", file=sys.stderr)
        return 1

    if args.docs:
        from mv4d_core.demo.docs import write_docs_pictures

        for p in write_docs_pictures(out / "synthetic", Path(args.docs)):
            done.append(f"README picture {p} ({p.stat().st_size // 1024} KB, synthetic data only)")
    wall_s = time.perf_counter() - t_start
    header = [label, f"model: {model_cfg.name if hasattr(model_cfg, 'name') else 'mv4d'}, input "
                     f"{model_cfg.image_width}x{model_cfg.image_height}, grid {model_cfg.grid.shape} @ "
                     f"{model_cfg.grid.voxel_size[0]:g} m",
              f"run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()} "
              f"({args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads); wall time "
              f"{wall_s:.0f} s"]
    header += [f"checkpoint: {', '.join(facts)}" for _ in [0] if facts]
    header += [f"WARNING: {w}" for w in warnings]
    header += [f"skipped: {s}" for s in skipped]
    title = ("mv4d demo — UNTRAINED MODEL (plumbing only)" if label == UNTRAINED_LABEL else "mv4d demo")
    paths = write_report(out, title, header, sections,
                         {"checkpoint": str(ckpt), "untrained": label == UNTRAINED_LABEL, "wall_s": wall_s,
                          "skipped": skipped, "seed": args.seed, "frames": args.frames})
    log("")
    log(f"mv4d demo finished in {wall_s:.0f} s. What it did:")
    for d in done:
        log(f"  - {d}")
    for s in skipped:
        log(f"  - SKIPPED {s}")
    log(f"Where everything is (under {out}):")
    for sec in sections:
        work = out / sec.title
        for p in sorted(work.iterdir()):
            log(f"  {p}{'/' if p.is_dir() else ''}")
    for p in paths.values():
        log(f"  {p}")
    log(f"Open {paths['html']} in a browser for the whole report.")
    if label == UNTRAINED_LABEL:
        log(f"*** {UNTRAINED_LABEL} ***")
    return 0
