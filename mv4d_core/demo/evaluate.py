"""Score decoded ``mv4d infer`` outputs with the one scoring path (:class:`mv4d_core.eval.scoring.Scorer`).

The output bag is decoded back (:mod:`mv4d_core.demo.outputs_bag`) into what a subscriber sees: the
occupied voxels, the flow cloud (voxels not in it read 0) and the 32FC1 depth images. Those become a
:class:`~mv4d_core.eval.scoring.Prediction` per frame, scored exactly as ``mv4d eval`` scores the
pipeline's published outputs, next to the same baselines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mv4d_core.demo.outputs_bag import BagOutputs, OutputsBag
from mv4d_core.eval.scoring import Prediction, Scorer
from mv4d_core.geometry.voxel_grid import VoxelGridSpec


@dataclass
class Evaluation:
    """``results``: method -> ``{group: compute() dicts}`` (model first, then baselines, the layout of
    :func:`mv4d_core.eval.report.markdown_report`); ``notes``: what was skipped or approximated, in
    words; ``frames``: frames scored."""

    results: dict[str, dict]
    notes: list[str] = field(default_factory=list)
    frames: int = 0


def bag_prediction(out: BagOutputs, frame, grid: VoxelGridSpec) -> Prediction:
    """Decoded outputs of one frame -> :class:`Prediction` (a camera without a depth image reads NaN)."""
    depth = None
    if out.depth_m:
        shape = next(iter(out.depth_m.values())).shape
        depth = np.stack([out.depth_m.get(cam, np.full(shape, np.nan, np.float32)) for cam in frame.camera_names])
    return Prediction(depth_m=depth, occupied=out.occupied, flow_mps=out.flow_mps, grid=grid)


def evaluate_outputs(frames: list, outputs: list[tuple[str, OutputsBag, VoxelGridSpec]], grid: VoxelGridSpec,
                     constant_fit_frames: list | None = None) -> Evaluation:
    """Score each ``(method, decoded output bag, its grid)`` of ``outputs`` on ``frames`` (in time order),
    next to the baselines: the trivial ones and the classical LiDAR ones (current sweep, accumulated
    sweeps, depth completion) where the frames have a LiDAR. A frame is scored when every method has
    outputs for it. ``constant_fit_frames``: frames to fit the constant-depth baseline on (default: the
    evaluation frames, flagged in the notes)."""
    from mv4d_core.eval.command import frame_interval_s

    # `mv4d infer` ran on every ring: score against them all (the held-out-ring protocol is `mv4d eval`'s)
    scorer = Scorer(heldout_rings=False)
    scored = [(i, f) for i, f in enumerate(frames) if all(o.for_frame(f) is not None for _, o, _ in outputs)]
    fit = constant_fit_frames if constant_fit_frames is not None else [f for _, f in scored]
    scorer.fit_constants(fit, fit_on_eval=constant_fit_frames is None)
    for i, frame in scored:
        dt = frame_interval_s(frames, i)
        for method, bag, method_grid in outputs:
            scorer.add(method, frame, bag_prediction(bag.for_frame(frame), frame, method_grid), dt)
        scorer.add_baselines(frame, grid, dt)
        scorer.add_lidar_baselines(frame, frames[max(0, i - 4):i][::-1], grid, dt)
    notes = scorer.notes()
    results = scorer.results()
    if any("depth_lidar" in r for r in results.values()):
        notes.append("depth vs projected LiDAR: the LiDAR methods (fusion weights, completions) received that very "
                     "sweep, so it shows how well they keep their input; `mv4d eval` holds out every other ring "
                     "for a fair comparison (depth_lidar_heldout_rings)")
    missing = len(frames) - len(scored)
    if missing:
        notes.append(f"{missing} frame(s) had no outputs in a bag (skipped by `mv4d infer`) and were not scored")
    return Evaluation(results=results, notes=notes, frames=len(scored))
