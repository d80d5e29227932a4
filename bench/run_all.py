"""Run every ``bench/bench_*.py`` and write their JSON plus a Markdown summary.

Usage: ``python -m bench.run_all --out out/bench [--only msgs,model]``. Each benchmark runs in its
own process (clean memory numbers, one failure does not stop the others) as
``python -m bench.bench_<name> --out <out>/<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import machine


def _flatten(prefix: str, obj, rows: list) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, rows)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        rows.append((prefix, obj))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/bench")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (msgs, model, ...)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(p.stem[len("bench_"):] for p in Path(__file__).parent.glob("bench_*.py"))
    if args.only:
        wanted = set(args.only.split(","))
        names = [n for n in names if n in wanted]
    summary = {"machine": machine(), "results": {}, "failed": {}}
    for name in names:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        r = subprocess.run([sys.executable, "-m", f"bench.bench_{name}", "--out", str(out / f"{name}.json")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            summary["failed"][name] = r.stderr[-2000:]
            print(f"[bench] {name} FAILED\n{r.stderr[-2000:]}", flush=True)
            continue
        summary["results"][name] = json.loads((out / f"{name}.json").read_text())
        print(f"[bench] {name} done in {time.perf_counter() - t0:.1f} s", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = ["# mv4d benchmarks", "", f"Machine: `{json.dumps(summary['machine'])}`", ""]
    for name, res in summary["results"].items():
        rows: list = []
        _flatten("", {k: v for k, v in res.items() if k != "machine"}, rows)  # machine: in the header
        lines += [f"## {name}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in rows]
        lines.append("")
    for name, err in summary["failed"].items():
        lines += [f"## {name}: FAILED", "", "```", err.strip()[-800:], "```", ""]
    (out / "summary.md").write_text("\n".join(lines))
    print(f"[bench] wrote {out / 'summary.json'} and {out / 'summary.md'}")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
