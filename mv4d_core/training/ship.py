"""Turn a training checkpoint into the small weights file shipped inside the package.

Keeps only what inference needs (the EMA weights when present, as ``model``), the model config, the
full training config and a provenance record (source run, steps, git commit, evaluation summary),
and writes a JSON sidecar next to it. Optimizer state, RNG state and history are dropped, which is
what makes the file small enough to commit (tiny config: ~6.5 MB).

    python -m mv4d_core.training.ship --checkpoint runs/tiny_synth/last.pt \
        --eval runs/tiny_synth/eval_unseen.json --out mv4d_core/weights/mv4d_tiny.pt
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path


from mv4d_core.training.checkpoint import load, save_atomic


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                           cwd=Path(__file__).resolve().parent)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def slim_checkpoint(src: str | Path, dst: str | Path, eval_json: str | Path | None = None,
                    note: str = "") -> dict:
    """Write the shipped weights ``dst`` (+ ``dst.json``) from trainer checkpoint ``src``; returns provenance."""
    ckpt = load(src)
    weights = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    if weights is None or "model_config" not in ckpt:
        raise ValueError(f"{src}: not an mv4d training checkpoint (needs 'model_config' and 'ema' or 'model')")
    weights = {k: v.detach().clone().contiguous() for k, v in weights.items()}
    provenance = {
        "source_checkpoint": str(src),
        "weights": "ema" if ckpt.get("ema") is not None else "model",
        "step": int(ckpt.get("step", 0)),
        "shipped_at_git_commit": _git_commit(),  # the run itself may predate this commit
        "shipped_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "num_parameters": int(sum(v.numel() for v in weights.values() if v.is_floating_point())),
        "note": note,
    }
    if eval_json is not None:
        provenance["evaluation"] = json.loads(Path(eval_json).read_text())
    out = {"model": weights, "model_config": ckpt["model_config"], "config": ckpt.get("config"),
           "provenance": {k: v for k, v in provenance.items() if k != "evaluation"}}
    path = save_atomic(out, dst)
    provenance["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    provenance["size_bytes"] = path.stat().st_size
    provenance["training_config"] = ckpt.get("config")
    Path(str(dst) + ".json").write_text(json.dumps(provenance, indent=2, default=str))
    return provenance


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write the shipped weights file from a training checkpoint.")
    ap.add_argument("--checkpoint", required=True, help="trainer checkpoint (RUN_DIR/last.pt)")
    ap.add_argument("--out", required=True, help="weights file to write, e.g. mv4d_core/weights/mv4d_tiny.pt")
    ap.add_argument("--eval", default=None, help="`mv4d eval --json` output to record next to the weights")
    ap.add_argument("--note", default="", help="free text stored in the provenance")
    args = ap.parse_args(argv)
    try:
        prov = slim_checkpoint(args.checkpoint, args.out, args.eval, args.note)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({prov['size_bytes'] / 1e6:.1f} MB, {prov['num_parameters']:,} parameters, "
          f"step {prov['step']}) and {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
