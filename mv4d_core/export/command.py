"""``mv4d export``: checkpoint -> single-file ONNX (opset >= 18), optionally -> cached TensorRT engine.

    mv4d export --checkpoint model.pt --onnx out/mv4d.onnx
    mv4d export --random-init --config tiny --onnx /tmp/smoke.onnx        # plumbing smoke test
    mv4d export --onnx out/mv4d.onnx --tensorrt fp16 --build-only          # TensorRT engine only
"""

from __future__ import annotations

import argparse
import logging
import sys

HELP = "export a checkpoint to ONNX (and optionally build the TensorRT engine)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="",
                        help="trainer checkpoint (.pt); empty = the weights shipped with mv4d")
    parser.add_argument("--onnx", required=True, help="output .onnx file (single file, weights inside)")
    parser.add_argument("--config", default=None,
                        help="model size preset (tiny|base) or ModelConfig YAML: the model of --random-init, or of a "
                             "checkpoint holding bare weights (a checkpoint's stored config must agree with it)")
    parser.add_argument("--random-init", action="store_true",
                        help="export an untrained model (smoke tests of the export and engines)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18; the dynamo exporter's minimum)")
    parser.add_argument("--static-batch", action="store_true", help="export batch 1 only (default: dynamic batch)")
    parser.add_argument("--tensorrt", choices=("fp32", "fp16"), default=None,
                        help="also build the cached TensorRT engine of the ONNX file at this precision")
    parser.add_argument("--engine-cache", default=None, help="TensorRT engine cache folder (default: next to --onnx)")
    parser.add_argument("--build-only", action="store_true",
                        help="with --tensorrt: skip the ONNX export, build the engine from the existing --onnx, exit")
    parser.add_argument("--force-rebuild", action="store_true", help="with --tensorrt: rebuild even on a cache hit")


def _config_from_arg(name: str):
    from mv4d_core.models import ModelConfig

    return ModelConfig.from_yaml(name) if name.endswith((".yaml", ".yml")) else ModelConfig.named(name)


def _model_from_args(args):
    """``(model, source)``: random init, or the checkpoint's weights. A checkpoint carrying its model
    config must agree with ``--config``; a bare state dict needs ``--config`` to know the shapes."""
    from pathlib import Path

    import torch

    from mv4d_core.engines import default_checkpoint, load_checkpoint, load_checkpoint_model
    from mv4d_core.models import build_model

    if args.random_init:
        cfg = _config_from_arg(args.config or "tiny")
        torch.manual_seed(args.seed)
        return build_model(cfg), f"random-init:{cfg.name}:seed{args.seed}"
    path = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    if path is None:
        raise ValueError("--checkpoint is empty and no default weights are shipped in mv4d_core/weights/; "
                         "give --checkpoint PATH (or --random-init for a smoke export)")
    if not path.is_file():
        raise ValueError(f"--checkpoint {path} does not exist")
    ckpt = load_checkpoint(path)
    stored = ckpt.get("model_config") if isinstance(ckpt, dict) else None
    if stored is not None or not args.config:
        model, cfg = load_checkpoint_model(path)
        if args.config and _config_from_arg(args.config) != cfg:
            raise ValueError(f"--config {args.config} differs from the model config stored in {path}; "
                             "drop --config to use the stored one")
        return model, path.name
    cfg = _config_from_arg(args.config)
    state = next((ckpt[k] for k in ("ema", "model", "state_dict") if isinstance(ckpt.get(k), dict)), ckpt)
    model = build_model(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"--checkpoint {path} does not fit --config {args.config}: {e}") from None
    return model, path.name


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from mv4d_core.engines import EngineError
    from mv4d_core.engines.onnx_format import read_model_info
    from mv4d_core.export.onnx_export import ExportError, export_onnx

    out = Path(args.onnx)
    if args.build_only and not args.tensorrt:
        print("error: --build-only needs --tensorrt fp32|fp16", file=sys.stderr)
        return 2
    try:
        if args.tensorrt:
            from mv4d_core.engines.tensorrt_engine import require_tensorrt

            require_tensorrt()  # before a long export that could not be used
        if not args.build_only:
            model, source = _model_from_args(args)
            res = export_onnx(model, out, opset=args.opset, dynamic_batch=not args.static_batch, source=source)
            print(f"wrote {res.path} ({res.size_bytes / 1e6:.1f} MB, opset {res.opset}, "
                  f"dynamic batch {res.dynamic_batch}, {res.seconds:.1f} s); inputs {list(res.input_names)}; "
                  f"outputs {list(res.output_names)}")
        else:
            read_model_info(out)  # a clear error for a missing or foreign file before TensorRT starts
        if args.tensorrt:
            from mv4d_core.engines.tensorrt_engine import build_engine

            prep = build_engine(out, args.tensorrt, args.engine_cache, args.force_rebuild)
            state = "built" if prep.built else "cached"
            print(f"TensorRT {args.tensorrt} engine {state}: {prep.decision.engine_path} ({prep.decision.reason})")
    except (ExportError, EngineError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
