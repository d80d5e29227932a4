"""The demo report: ``metrics.json``, ``report.md`` and a self-contained ``index.html`` (PNGs inlined).

A report is a list of :class:`Section` s (one per dataset run) plus run-level lines; each section
holds its Markdown metric tables (:func:`mv4d_core.eval.report.markdown_report`), notes and images.
The HTML is produced from the same Markdown by a converter that knows exactly what we emit
(headings, pipe tables, bullet lists, paragraphs), so it needs no extra dependency.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Section:
    """One dataset run: title, intro lines, metric Markdown, notes, images ``(caption, path)``."""

    title: str
    intro: list[str] = field(default_factory=list)
    metrics_md: str = ""
    notes: list[str] = field(default_factory=list)
    images: list[tuple[str, Path]] = field(default_factory=list)
    results: dict = field(default_factory=dict)


def _clean(obj):
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python numbers, Paths -> str."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _demote(md: str, levels: int = 2) -> str:
    """Push Markdown headings down (``#`` -> ``###``) so section tables nest under the section title."""
    return "\n".join(("#" * levels + line) if line.startswith("#") else line for line in md.splitlines())


def report_markdown(title: str, header: list[str], sections: list[Section], base: Path) -> str:
    out = [f"# {title}", ""]
    out += [f"* {line}" for line in header] + [""]
    for s in sections:
        out += [f"## {s.title}", ""]
        out += [f"* {line}" for line in s.intro] + ([""] if s.intro else [])
        for caption, path in s.images:
            rel = Path(path).relative_to(base).as_posix()
            out += [f"![{caption}]({rel})", "", f"*{caption}*", ""]
        if s.metrics_md:
            out += [_demote(s.metrics_md.strip()), ""]
        if s.notes:
            out += ["Notes:", ""] + [f"* {n}" for n in s.notes] + [""]
    return "\n".join(out).rstrip() + "\n"


def markdown_to_html(md: str, base: Path, title: str) -> str:
    """Our Markdown subset -> one HTML page; images referenced relative to ``base`` are inlined."""
    body: list[str] = []
    lines = md.splitlines()
    i = 0
    in_list = False

    def inline(text: str) -> str:
        t = html.escape(text)
        parts = t.split("`")
        t = "".join(f"<code>{p}</code>" if k % 2 else p for k, p in enumerate(parts))
        return t

    while i < len(lines):
        line = lines[i]
        if in_list and not line.startswith("* "):
            body.append("</ul>")
            in_list = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            caption, rel = line[2:].split("](", 1)
            rel = rel.rstrip(")")
            data = base64.b64encode((base / rel).read_bytes()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                        f"<figcaption>{inline(caption)}</figcaption></figure>")
            if i + 2 < len(lines) and lines[i + 2].startswith("*") and lines[i + 2].endswith("*"):
                i += 2  # the Markdown caption line duplicates the figcaption
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            head, data_rows = rows[0], [r for r in rows[2:]]
            body.append("<table><thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
                        + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in data_rows)
                        + "</tbody></table>")
            continue
        elif line.startswith("* "):
            if not in_list:
                body.append("<ul>")
                in_list = True
            body.append(f"<li>{inline(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
        i += 1
    if in_list:
        body.append("</ul>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #bbb;padding:3px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
             "figcaption{font-size:0.9em;color:#555}code{background:#f2f2f2;padding:0 3px}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(out_dir: Path, title: str, header: list[str], sections: list[Section], extra: dict) -> dict[str, Path]:
    """Write ``report.md``, ``index.html`` and ``metrics.json`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    md = report_markdown(title, header, sections, out_dir)
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "index.html", "json": out_dir / "metrics.json"}
    paths["markdown"].write_text(md, encoding="utf-8")
    paths["html"].write_text(markdown_to_html(md, out_dir, title), encoding="utf-8")
    doc = {"title": title, "header": header, **extra,
           "sections": [{"title": s.title, "intro": s.intro, "notes": s.notes, "results": s.results,
                         "images": {c: Path(p).relative_to(out_dir).as_posix() for c, p in s.images}}
                        for s in sections]}
    paths["json"].write_text(json.dumps(_clean(doc), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return paths
