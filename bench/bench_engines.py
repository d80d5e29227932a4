"""Engine benchmark: per-stage latency of the torch model vs the exported graph in onnxruntime (CPU),
end to end through the pipeline, plus torch-CUDA / TensorRT rows where those exist (else recorded as
skipped with the reason).

Usage: ``python -m bench.bench_engines [--out out/bench/engines.json] [--repeats 5] [--config tiny]``.

Stages (one rig sample, batch 1, cameras at ``--camera-hw``, default nuScenes 900x1600):

* ``preprocess``: ``PerceptionPipeline.preprocess`` (resize + intrinsics), engine independent;
* ``backbone``: ``MV4DModel.encode`` (2D backbone + neck + depth net + softmaxes / expected depth);
* ``lift``: ``MV4DModel.lift`` (LSS frustum + voxel pooling);
* ``heads``: ``fuse_previous`` with a previous volume + ``decode`` (3D neck + voxel heads); torch samples
  the previous volume with ``grid_sample``, the exported graph with gathers;
* ``postprocess``: ``PerceptionPipeline.postprocess`` (occupancy mask, depth point cloud);
* ``message_packing``: ``output_arrays`` (the structured arrays the node copies into messages);
* ``engine_total``: ``Engine.infer`` (numpy in/out, temporal); ``pipeline_two_frames``: ``reset`` + 2 x ``process``.

onnxruntime runs each stage (the model's own stage methods) as its own exported sub-graph and the
whole graph as the engine.
Latencies are medians (``stages_min_ms``: minima) over ``--repeats`` after one warm-up, the
variants of a stage measured round-robin; ``ratio_torch_over_onnxruntime`` > 1 means
onnxruntime is faster. Both libraries get the same thread count (``--threads``, default 1: with 2
threads on a loaded 2-core machine torch's OpenMP regions stall and its latency swings by 10x).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.common import machine, round_robin, write_result


def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    return compare({"x": fn}, repeats, warmup)["x"]


#: Minimum of each comparison, filled by :func:`compare` (less sensitive to other load on the machine).
MINIMA: dict[int, dict[str, float]] = {}


def compare(fns: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median milliseconds of each callable, measured round-robin so that load from other processes
    hits all of them alike. The minima are kept in :data:`MINIMA` under the id of the result."""
    times = round_robin(fns, repeats, warmup)
    res = {k: round(statistics.median(v) * 1e3, 3) for k, v in times.items()}
    MINIMA[id(res)] = {k: round(min(v) * 1e3, 3) for k, v in times.items()}
    return res


def make_frames(cfg, height: int, width: int, n: int = 2, seed: int = 0):
    """``n`` frames of random images at ``height x width`` (70 deg cameras around the car), 0.1 s apart."""
    from mv4d_core.data.frame import FrameRecord
    from mv4d_core.export.wrapper import example_inputs
    from mv4d_core.geometry.rig import NUSCENES_CAMERAS
    from mv4d_core.geometry.transforms import yaw_transform

    _, _, T, *_ = example_inputs(cfg, batch=1)
    f = 0.5 * width / math.tan(math.radians(35.0))
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])
    rng = np.random.default_rng(seed)
    names = list(NUSCENES_CAMERAS[:cfg.num_cameras])
    return [FrameRecord(1_000_000_000 + i * 100_000_000, names,
                        rng.integers(0, 256, (cfg.num_cameras, height, width, 3), dtype=np.uint8),
                        np.repeat(K[None], cfg.num_cameras, 0), T[0].numpy(), yaw_transform(0.02 * i, (i * 1.0, 0, 0)))
            for i in range(n)]


class _Encode(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, images):
        return self.inner.encode(images)


class _Lift(_Encode):
    def forward(self, depth_prob, context, intrinsics, T_base_cam):
        return self.inner.lift(depth_prob, context, intrinsics, T_base_cam)


class _Decode(_Encode):
    def forward(self, volume, prev_volume, T_prev_cur, prev_valid):
        return _heads(self.inner, volume, prev_volume, T_prev_cur, prev_valid)


def _heads(model, volume, prev_volume, T_prev_cur, prev_valid):
    """Temporal fusion + 3D neck + heads of ``model`` as a tuple (sdf, rgb, flow)."""
    from mv4d_core.models.inputs import ModelInputs

    B, N = volume.shape[0], 1
    dummy = ModelInputs(volume.new_zeros(B, N, 3, 1, 1), volume.new_zeros(B, N, 3, 3), volume.new_zeros(B, N, 4, 4),
                        prev_volume, T_prev_cur, prev_valid)
    heads, _ = model.decode(model.fuse_previous(volume, dummy))
    return heads["sdf"], heads["rgb"], heads["flow_mps"]


def export_stage(module, args, names, path: Path) -> Path:
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), tuple(args), str(path), dynamo=True, external_data=False, opset_version=18,
                          input_names=list(names), verbose=False)
    return path


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b > 0 else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/bench/engines.json")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--config", default="tiny", help="model size preset")
    ap.add_argument("--camera-hw", type=int, nargs=2, default=(900, 1600), metavar=("H", "W"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads for torch and onnxruntime alike (default 1: on a shared 2-core machine "
                         "2 spinning threads per library make torch latencies swing 10x with other load)")
    args = ap.parse_args(argv)

    from mv4d_core.engines.onnxruntime_engine import OnnxRuntimeEngine
    from mv4d_core.engines.tensorrt_engine import tensorrt_available
    from mv4d_core.engines.torch_engine import TorchEngine
    from mv4d_core.export.onnx_export import export_onnx
    from mv4d_core.export.wrapper import example_inputs
    from mv4d_core.models import ModelConfig, build_model
    from mv4d_core.pipeline.config import PerceptionConfig
    from mv4d_core.pipeline.pipeline import PerceptionPipeline, output_arrays

    threads = max(1, args.threads)
    torch.set_num_threads(threads)
    cfg = ModelConfig.named(args.config)
    torch.manual_seed(args.seed)
    model = build_model(cfg).eval()
    R = args.repeats
    result: dict = {"config": cfg.name, "repeats": R, "threads": threads, "camera_hw": list(args.camera_hw),
                    "num_cameras": cfg.num_cameras, "grid": list(cfg.grid.shape)}
    result["machine"] = machine()
    import onnxruntime

    result["onnxruntime"] = onnxruntime.__version__
    result["torch"] = torch.__version__

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        exp = export_onnx(model, tmp / "full.onnx")
        result["export"] = {"seconds": round(exp.seconds, 2), "bytes": exp.size_bytes, "opset": exp.opset}

        # ---- stage inputs (torch) and their exported sub-graphs
        images, K, T, prev, T_prev_cur, prev_valid = example_inputs(cfg, batch=1, seed=args.seed, temporal_prev=True)
        with torch.no_grad():
            depth_prob, context, depth_m = model.encode(images)
            volume = model.lift(depth_prob, context, K, T)
        t0 = time.perf_counter()
        s_enc = ort_session(export_stage(_Encode(model), [images], ["images"], tmp / "enc.onnx"), threads)
        s_lift = ort_session(export_stage(_Lift(model), [depth_prob, context, K, T],
                                          ["depth_prob", "context", "intrinsics", "T_base_cam"], tmp / "lift.onnx"),
                             threads)
        s_dec = ort_session(export_stage(_Decode(model), [volume, prev, T_prev_cur, prev_valid],
                                         ["volume", "prev_volume", "T_prev_cur", "prev_valid"], tmp / "dec.onnx"),
                            threads)
        result["stage_export_seconds"] = round(time.perf_counter() - t0, 2)

        def feeds(sess, tensors):
            return {i.name: t.numpy() for i, t in zip(sess.get_inputs(), tensors)}

        f_enc = feeds(s_enc, [images])
        f_lift = feeds(s_lift, [depth_prob, context, K, T])
        f_dec = feeds(s_dec, [volume, prev, T_prev_cur, prev_valid])
        m = model
        stages: dict = {}
        minima: dict = {}
        with torch.inference_mode():
            for name, fns in {
                "backbone": {"torch": lambda: m.encode(images), "onnxruntime": lambda: s_enc.run(None, f_enc)},
                "lift": {"torch": lambda: m.lift(depth_prob, context, K, T),
                         "onnxruntime": lambda: s_lift.run(None, f_lift)},
                "heads": {"torch": lambda: _heads(m, volume, prev, T_prev_cur, prev_valid),
                          "onnxruntime": lambda: s_dec.run(None, f_dec)},
            }.items():
                stages[name] = compare(fns, R)
                minima[name] = MINIMA[id(stages[name])]

        # ---- the pipeline around each engine
        config = PerceptionConfig(camera_names=tuple(make_frames(cfg, 8, 8, 1)[0].camera_names))
        frames = make_frames(cfg, *args.camera_hw, n=2, seed=args.seed)
        engines = {"torch": TorchEngine(model, cfg),
                   "onnxruntime": OnnxRuntimeEngine(exp.path, intra_op_threads=threads)}
        pipes = {k: PerceptionPipeline(e, config) for k, e in engines.items()}
        pre = {k: p.preprocess(frames[1]) for k, p in pipes.items()}
        for k, p in pipes.items():
            p.process(frames[0])                         # state for the temporal path
            if pre[k].inputs.T_prev_cur is None:
                from mv4d_core.models.inputs import relative_pose
                pre[k].inputs.T_prev_cur = relative_pose(frames[0].T_world_base,
                                                         frames[1].T_world_base).astype(np.float32)
        raw = {k: engines[k].infer(pre[k].inputs) for k in engines}
        outs = {k: pipes[k].postprocess(frames[1], pre[k], raw[k]) for k in engines}

        def run_pipeline(pipe):
            pipe.reset()
            pipe.process(frames[0])
            pipe.process(frames[1])

        per_engine = {
            "preprocess": {k: (lambda p=p: p.preprocess(frames[1])) for k, p in pipes.items()},
            "engine_total": {k: (lambda k=k: engines[k].infer(pre[k].inputs)) for k in engines},
            "postprocess": {k: (lambda k=k: pipes[k].postprocess(frames[1], pre[k], raw[k])) for k in engines},
            "message_packing": {k: (lambda k=k: output_arrays(outs[k], config)) for k in engines},
            "pipeline_two_frames": {k: (lambda p=p: run_pipeline(p)) for k, p in pipes.items()},
        }
        for name, fns in per_engine.items():
            stages[name] = compare(fns, R)
            minima[name] = MINIMA[id(stages[name])]
        for name, v in stages.items():
            v["ratio_torch_over_onnxruntime"] = ratio(v["torch"], v["onnxruntime"])
            minima[name]["ratio_torch_over_onnxruntime"] = ratio(minima[name]["torch"], minima[name]["onnxruntime"])
        result["stages_ms"] = stages
        result["stages_min_ms"] = minima
        result["pipeline_ratio_torch_over_onnxruntime"] = stages["pipeline_two_frames"]["ratio_torch_over_onnxruntime"]

        # ---- accelerator rows
        rows = []
        if torch.cuda.is_available():
            cuda_engine = TorchEngine(build_model(cfg).eval(), cfg, device="cuda")
            cuda_engine.model.load_state_dict(model.state_dict())
            first = PerceptionPipeline(cuda_engine, config).preprocess(frames[0]).inputs

            def cuda_infer():
                cuda_engine.infer(first)
                torch.cuda.synchronize()
            rows.append({"engine": "torch-cuda", "engine_infer_ms": median_ms(cuda_infer, R),
                         "device": torch.cuda.get_device_name(0)})
        else:
            rows.append({"engine": "torch-cuda",
                         "skipped": "CUDA is not available (torch.cuda.is_available() is False)"})
        for precision in ("fp32", "fp16"):
            if not tensorrt_available():
                rows.append({"engine": f"tensorrt-{precision}",
                             "skipped": "TensorRT is not installed (optional; it needs NVIDIA's package index)"})
            elif not torch.cuda.is_available():
                rows.append({"engine": f"tensorrt-{precision}", "skipped": "CUDA is not available"})
            else:
                from mv4d_core.engines.tensorrt_engine import TensorRTEngine

                trt_engine = TensorRTEngine(exp.path, precision, cache_dir=tmp / "trt")
                first = PerceptionPipeline(trt_engine, config).preprocess(frames[0]).inputs
                rows.append({"engine": f"tensorrt-{precision}",
                             "engine_infer_ms": median_ms(lambda: trt_engine.infer(first), R),
                             "build_seconds": round(trt_engine.prepared.build_seconds, 1)})
        result["accelerator_rows"] = rows

    write_result(args.out, result, shown={"stages_ms": result["stages_ms"],
                                          "pipeline_ratio": result["pipeline_ratio_torch_over_onnxruntime"],
                                          "accelerator_rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
