"""Reading model files: trainer checkpoints / shipped weights (``.pt``) and the default file paths.

A checkpoint is a dict holding the model config (``model_config``, or ``config.model`` in trainer
checkpoints) and weights (``ema`` if present, else ``model`` or ``state_dict``): inference uses the
EMA weights.
"""

from __future__ import annotations

from pathlib import Path

from mv4d_core.engines.base import EngineError

#: Shipped model files live here (``*.pt``, and ``*.onnx`` when exported ones are shipped).
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """``torch.load`` of a checkpoint file; missing or unreadable files raise a one-line error
    (:class:`FileNotFoundError` / :class:`ValueError`)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises several types for truncated/corrupt files
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from None


def load_checkpoint_model(path: str | Path):
    """``(model, ModelConfig)`` of a checkpoint (see the module docstring); :class:`EngineError` naming
    the parameter ``checkpoint`` when the file is missing, unreadable or does not fit its config."""
    from mv4d_core.models import ModelConfig, build_model

    try:
        ckpt = load_checkpoint(path)
    except (FileNotFoundError, ValueError) as e:
        raise EngineError(str(e), "checkpoint") from None
    if not isinstance(ckpt, dict):
        raise EngineError(f"checkpoint {path}: expected a dict, got {type(ckpt).__name__}", "checkpoint")
    cfg_dict = ckpt.get("model_config")
    if cfg_dict is None and isinstance(ckpt.get("config"), dict):
        cfg_dict = ckpt["config"].get("model", ckpt["config"])
    if cfg_dict is None:
        raise EngineError(f"checkpoint {path}: no 'model_config' entry (keys: {sorted(ckpt)})", "checkpoint")
    try:
        cfg = cfg_dict if isinstance(cfg_dict, ModelConfig) else ModelConfig.from_dict(cfg_dict)
    except ValueError as e:
        raise EngineError(f"checkpoint {path}: {e}", "checkpoint") from None
    state = next((ckpt[k] for k in ("ema", "model", "state_dict") if ckpt.get(k) is not None), None)
    if state is None:
        raise EngineError(f"checkpoint {path}: no 'ema'/'model'/'state_dict' weights (keys: {sorted(ckpt)})",
                          "checkpoint")
    model = build_model(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise EngineError(f"checkpoint {path}: weights do not fit the model config: {e}", "checkpoint") from None
    return model, cfg


#: The shipped weights: camera-only and with the LiDAR as an input.
CAMERA_ONLY_WEIGHTS = "mv4d_tiny.pt"
FUSION_WEIGHTS = "mv4d_tiny_fusion.pt"


def default_checkpoint(lidar: bool = False) -> Path | None:
    """The weights shipped inside the package: the fusion weights when ``lidar`` (and shipped), else the
    camera-only ones; None when absent."""
    for name in ((FUSION_WEIGHTS, CAMERA_ONLY_WEIGHTS) if lidar else (CAMERA_ONLY_WEIGHTS,)):
        if (WEIGHTS_DIR / name).is_file():
            return WEIGHTS_DIR / name
    return None


def default_onnx() -> Path | None:
    """The exported model shipped inside the package (``mv4d_core/weights/*.onnx``), or None."""
    found = sorted(WEIGHTS_DIR.glob("*.onnx")) if WEIGHTS_DIR.is_dir() else []
    return found[0] if found else None
