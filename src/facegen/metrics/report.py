"""Evaluation report: metrics.json (everything), report.md and a self-contained report.html.

The two readable reports are rendered from one list of blocks, so they always agree. The
HTML embeds its pictures as base64 PNG and needs no other file; report.md links the PNG
files written beside it.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from facegen.utils import atomic_write_bytes, atomic_write_json, atomic_write_text

CAPTIONS = {
    "samples": "Evaluated pictures (first 64, at the reference resolution)",
    "closest_pairs": "Closest generated (left) / training (right) pairs: pixel space first, then Inception space",
    "face_checks": "Head roll and eye positions: generated vs reference",
}


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def blocks(report: dict, pictures: dict) -> list[tuple]:
    """The report as ("h", text) / ("p", text) / ("table", header, rows) / ("img", name) blocks."""
    m, src, ref = report["metrics"], report["source"], report["reference"]
    out: list[tuple] = [
        ("h", f"Evaluation of {src['name']}"),
        ("p", f"Evaluated: {src['count']:,} pictures from the {src['kind']} {src['path']}"
              + (f" (split {src['split']})" if src.get("split") else "") + "."),
        ("p", f"Reference: split {ref['split']!r} of {ref['store']} ({ref['count']:,} pictures at {ref['resolution']} px, "
              f"content hash {ref['content_hash'][:12]})." + overlap_text(ref.get("overlap"))),
        ("p", f"Features: {report['feature_network']['name']}, sha256 {report['feature_network']['sha256'][:12]}, "
              f"resize {report['feature_network']['resize']}."),
        ("p", f"Command: `{report['command']}`"),
    ]
    out += [("p", f"**Warning:** {w}") for w in report["warnings"]]
    rows = []
    for name in ("fid", "kid", "precision", "recall", "density", "coverage"):
        if name in m:
            e = m[name]
            note = {"fid": f"95% bootstrap interval {fmt(e.get('ci95', [None])[0])} - {fmt(e.get('ci95', [None, None])[1])}",
                    "kid": f"std {fmt(e.get('std'))} over {e.get('subsets')} subsets of {e.get('subset_size')}"}.get(name, f"k={e.get('k')}")
            rows.append([name.upper() if name in ("fid", "kid") else name, fmt(e["value"]), f"{e['n_generated']:,} / {e['n_reference']:,}", note])
    if rows:
        out += [("h2", "Distribution metrics"), ("table", ["metric", "value", "samples (generated / reference)", "notes"], rows)]
    if "memorization" in m:
        out += memorization_blocks(m["memorization"])
    if "faces" in m:
        out += faces_blocks(m["faces"])
    out += [("img", name) for name in pictures]
    return out


def overlap_text(overlap: dict | None) -> str:
    """The reference against the run's training faces, in a sentence (reports before issue 26: nothing)."""
    if not overlap:
        return ""
    if not overlap["checked"]:
        return f" Against the training faces: {overlap['note']}."
    allowed = " (allowed with --allow-overlap)" if overlap["in_training"] else ""
    return (f" {overlap['in_training']:,} of them are among the {overlap['training_count']:,} training faces of "
            f"{overlap['training_store']}{allowed} ({overlap['method']}).")


def memorization_blocks(mem: dict) -> list[tuple]:
    rows = []
    for space in ("inception", "pixels", "identity"):
        e = mem.get(space, {})
        if "copy_share" in e:
            rows.append([space, fmt(e["copy_share"]), str(len(e["flagged"])), fmt(e["median_nearest_distance"]),
                         f"{e['n_generated']:,}", fmt(e.get("uniqueness")) if space == "identity" else ""])
    ident = mem.get("identity", {})
    searched = mem.get("searched")
    where = f"the train split of {searched['store']}, {searched['of']}" if searched else "the training split"
    return [
        ("h2", "Memorization audit"),
        ("p", f"Nearest neighbours in {where} ({mem['train_count']:,} pictures). A sample is flagged when its "
              "nearest training picture is closer than 1/3 of the distance to the second nearest. Identity: dlib face "
              f"descriptors, faces found in {ident.get('faces_generated', 0)} of {ident.get('n_generated', 0)} generated and "
              f"{ident.get('faces_train', 0)} of {ident.get('n_train', 0)} training pictures; uniqueness = share of "
              "generated faces with no training face of the same identity (distance >= 0.6)."),
        ("table", ["space", "copy share", "flagged", "median nearest distance", "samples", "uniqueness"], rows),
    ]


def faces_blocks(faces: dict) -> list[tuple]:
    g, r = faces["generated"], faces["reference"]
    rows = [[name, fmt(v)] for name, v in faces["wasserstein1"].items()]
    return [
        ("h2", "Face checks"),
        ("p", f"Exactly one face: {fmt(g['one_face_share'])} of {g['n']:,} generated, {fmt(r['one_face_share'])} of "
              f"{r['n']:,} reference pictures (no face: {fmt(g['no_face_share'])} vs {fmt(r['no_face_share'])})."),
        ("table", ["quantity", "Wasserstein-1 distance to reference (degrees / fraction of width or height)"], rows),
    ]


def to_markdown(report_blocks: list[tuple]) -> str:
    lines = []
    for b in report_blocks:
        if b[0] in ("h", "h2"):
            lines += [("# " if b[0] == "h" else "## ") + b[1], ""]
        elif b[0] == "p":
            lines += [b[1], ""]
        elif b[0] == "table":
            lines += ["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])]
            lines += ["| " + " | ".join(row) + " |" for row in b[2]] + [""]
        elif b[0] == "img":
            lines += [f"![{CAPTIONS.get(b[1], b[1])}]({b[1]}.png)", ""]
    return "\n".join(lines)


def to_html(report_blocks: list[tuple], pictures: dict) -> str:
    def text(s: str) -> str:  # **bold** and `code` are the only markdown the blocks use
        parts = html.escape(s).split("`")
        s = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
        bold = s.split("**")
        return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(bold))

    body = []
    for b in report_blocks:
        if b[0] in ("h", "h2"):
            body.append(f"<{'h1' if b[0] == 'h' else 'h2'}>{text(b[1])}</{'h1' if b[0] == 'h' else 'h2'}>")
        elif b[0] == "p":
            body.append(f"<p>{text(b[1])}</p>")
        elif b[0] == "table":
            head = "".join(f"<th>{text(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{text(c)}</td>" for c in row) + "</tr>" for row in b[2])
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif b[0] == "img":
            data = base64.b64encode(pictures[b[1]]).decode()
            body.append(f"<figure><img src=\"data:image/png;base64,{data}\"><figcaption>{text(CAPTIONS.get(b[1], b[1]))}"
                        "</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}img{max-width:100%;image-rendering:pixelated}")
    return f"<!doctype html><html><head><meta charset=\"utf-8\"><title>facegen report</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"


def write_report(out: str | Path, report: dict, pictures: dict[str, bytes]) -> None:
    """metrics.json, report.md, report.html and one PNG per picture into folder `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in pictures.items():
        atomic_write_bytes(out / f"{name}.png", data)
    report_blocks = blocks(report, pictures)
    atomic_write_json(out / "metrics.json", report)
    atomic_write_text(out / "report.md", to_markdown(report_blocks))
    atomic_write_text(out / "report.html", to_html(report_blocks, pictures))
