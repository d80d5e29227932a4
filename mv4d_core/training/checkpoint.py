"""Checkpoints written atomically (temp file + fsync + rename) and RNG state capture for exact resume."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mv4d_core.engines.checkpoint import load_checkpoint
from mv4d_core.utils.atomic_write import atomic_open


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temp file in the same folder, then ``os.replace``: a crash mid-write never
    leaves a truncated checkpoint under the final name."""
    with atomic_open(path) as f:
        torch.save(obj, f)
    return Path(path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """:func:`mv4d_core.engines.load_checkpoint` (one-line errors for missing or unreadable files)."""
    return load_checkpoint(path, map_location)


def rng_state() -> dict:
    """Every RNG a training step may draw from."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
