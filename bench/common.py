"""Helpers every ``bench_*.py`` shares: machine description, writing the JSON result, timing loops."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Callable


def machine() -> dict:
    """Python/platform/CPU (and torch/CUDA when torch imports) of this machine, for reading the numbers."""
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def write_result(path: str | Path, result: dict, shown: dict | None = None) -> Path:
    """Add ``result["machine"]`` (unless the benchmark set it), write ``result`` as JSON to ``path``
    (folders created) and print ``shown`` (default: the whole result)."""
    result.setdefault("machine", machine())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result if shown is None else shown, indent=2))
    return path


def round_robin(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 0,
                sync: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Wall seconds of each call of each callable: ``warmup`` untimed calls each, then ``repeats``
    rounds calling them in turn, so load from other processes hits all of them alike. ``sync``
    (e.g. ``torch.cuda.synchronize``) runs before each call and inside the timed span after it."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            if sync is not None:
                sync()
            t0 = time.perf_counter()
            fn()
            if sync is not None:
                sync()
            times[k].append(time.perf_counter() - t0)
    return times


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None] | None = None) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` (no warm-up; see :func:`round_robin` for ``sync``)."""
    return round_robin({"fn": fn}, repeats, sync=sync)["fn"]


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` calls of ``fn``, seconds (inf when ``repeats`` is 0)."""
    return min(timed(fn, repeats), default=float("inf"))
