"""`facegen demo`: faces from the embedded default model, a small evaluation, an HTML report.

Runs on a fresh machine with no dataset and no download. The evaluation is deliberately
small (a few hundred samples, minutes on a 2-core CPU): it shows the numbers are computed,
not what the model is worth. The model card (facegen/default/MODEL_CARD.md) carries the
full evaluation (10,000 samples).

The reference for KID and precision/recall is shipped with the model: Inception features of
held-out real faces (REFERENCE_FEATURES, float16), so no face dataset is needed here. Both
are computed by the metric registry with `facegen eval`'s protocol (metrics/registry.py):
the same subsets, k and equal counts, recorded in demo.json.
"""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path

import numpy as np

from facegen.utils import atomic_write_json, atomic_write_text, make_grid, save_png

# {"features": (n, 2048) float16, "what": str, "network": str, "resize": str, "rows": str}: made
# by scripts/reference_features.py; network and resize key them (features of another network
# or resize are not comparable, so the demo refuses them instead of scoring against them);
# rows says how the faces were picked ("spread"; absent: a holdout's first rows, before issue 26).
REFERENCE_FEATURES = "reference-features.npz"


def run_demo(out: str | Path = "demo-out", n_eval: int = 200, n_grid: int = 64, model: str | Path | None = None,
             progress: bool = True) -> dict:
    """Sample, check and score the default model (or `model`); write OUT/{faces.png, samples/, report.html, demo.json}."""
    from facegen.sample import load_generator, model_dir, sample_to_folder

    out = Path(out)
    folder = model_dir(model)
    generator = load_generator(folder)
    t0 = time.perf_counter()
    n = max(n_eval, n_grid)
    timing = sample_to_folder(generator, range(n), out / "samples", batch_size=32, show_progress=progress, replace=True)  # the demo's own folder
    images = _read_folder(out / "samples", range(n))
    save_png(out / "faces.png", make_grid(images[:n_grid], nrow=8))

    results: dict = {"model": str(folder), "info": generator.info(), "n_samples": n, "sampling": timing}
    results["faces"] = _face_check(images[:n_eval])
    ref_file = folder / REFERENCE_FEATURES
    if ref_file.is_file():
        results["distribution"] = _distribution(images[:n_eval], ref_file, progress)
    results["seconds"] = time.perf_counter() - t0
    atomic_write_json(out / "demo.json", results)
    _write_html(out / "report.html", results, out / "faces.png", folder)
    return results


def _read_folder(folder: Path, seeds) -> np.ndarray:
    from PIL import Image

    from facegen.sample import seed_file

    return np.stack([np.asarray(Image.open(seed_file(folder, s)).convert("RGB")) for s in seeds])


def _face_check(images: np.ndarray) -> dict:
    """Share of samples in which dlib's HOG detector finds exactly one face, and their roll."""
    from facegen.data.align import check_faces

    checks = check_faces(images)
    rolls = np.array([c.roll_deg for c in checks if c.num_faces >= 1], dtype=float)
    return {"n": len(checks),
            "one_face_share": float(np.mean([c.num_faces == 1 for c in checks])),
            "any_face_share": float(np.mean([c.num_faces >= 1 for c in checks])),
            "roll_deg_mean_abs": float(np.abs(rolls).mean()) if len(rolls) else None}


def _distribution(images: np.ndarray, ref_file: Path, progress: bool) -> dict:
    from facegen.metrics.inception import extract_features, network_hash, resize_mode
    from facegen.metrics.registry import measure
    from facegen.utils import FacegenError

    ref = np.load(ref_file)
    made_with = {key: str(ref[key]) if key in ref.files else "unrecorded" for key in ("network", "resize")}
    if made_with != {"network": network_hash(), "resize": resize_mode()}:
        raise FacegenError(f"{ref_file}: reference features made with network {made_with['network']}, resize {made_with['resize']}; "
                           f"this facegen uses {network_hash()}, {resize_mode()}: rebuild them with scripts/reference_features.py")
    reference = ref["features"].astype(np.float32)
    generated = extract_features(images, progress=progress, label="inception features")
    scores = measure(["kid", "pr"], generated, reference)
    return {"reference": str(ref["what"]), "reference_rows": str(ref["rows"]) if "rows" in ref.files else "first rows of the holdout",
            "n_generated": len(generated), "n_reference": len(reference),
            "kid": scores["kid"]["value"], "kid_std": scores["kid"]["std"],
            "precision": scores["precision"]["value"], "recall": scores["recall"]["value"], "metrics": scores}


def _write_html(path: Path, r: dict, grid_png: Path, folder: Path) -> None:
    import base64

    grid = base64.b64encode(grid_png.read_bytes()).decode()
    info = r["info"]
    rows = [("samples", f"{r['n_samples']}"),
            ("sampling speed", f"{r['sampling']['images_per_second']:.1f} img/s on this machine"),
            ("one face found (dlib HOG)", f"{r['faces']['one_face_share']:.1%} of {r['faces']['n']}")]
    if r["faces"]["roll_deg_mean_abs"] is not None:
        rows.append(("mean |head roll|", f"{r['faces']['roll_deg_mean_abs']:.1f} degrees"))
    d = r.get("distribution")
    if d:
        rows += [("KID", f"{d['kid']:.4f} ± {d['kid_std']:.4f} ({d['n_generated']} generated vs {d['n_reference']} real)"),
                 (f"precision / recall (k={d['metrics']['precision']['k']})",
                  f"{d['precision']:.3f} / {d['recall']:.3f} ({d['metrics']['precision']['n_compared_each']} of each)")]
    table = "\n".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    card = folder / "MODEL_CARD.md"
    card_html = markdown_to_html(card.read_text(), top=3) if card.is_file() else "<p>(no model card)</p>"
    ref_note = html.escape(d["reference"]) if d else "no shipped reference features: KID and precision/recall skipped"
    atomic_write_text(path, f"""<!doctype html><meta charset="utf-8"><title>facegen demo</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;max-width:860px;margin:2em auto;padding:0 1em}}
img{{max-width:100%;image-rendering:pixelated}}td,th{{padding:.2em 1em .2em 0;text-align:left}}pre{{white-space:pre-wrap;background:#f5f5f5;padding:1em;max-height:30em;overflow:auto}}
.card{{border-top:1px solid #ddd}}</style>
<h1>facegen demo</h1>
<p>Model: <b>{html.escape(str(info.get('name')))}</b> ({html.escape(str(info.get('family')))}, {info.get('resolution')} px). Seeds 0-{r['n_samples'] - 1}.</p>
<img src="data:image/png;base64,{grid}" alt="generated faces">
<h2>A small evaluation</h2>
<p>Indicative only: {r['faces']['n']} samples. Reference: {ref_note}. The model card below gives the full evaluation.</p>
<table>{table}</table>
<h2>Model card</h2><div class="card">
{card_html}
</div>
<p><small>{html.escape(json.dumps({k: r[k] for k in ('seconds',)}))}</small></p>
""")


def markdown_to_html(text: str, top: int = 1) -> str:
    """The markdown of a model card as HTML: headings (`#` becomes <h`top`>), paragraphs, `-`
    and `1.` lists with indented continuation lines, pipe tables, fenced code, and inline
    `code`, **bold** and *emphasis*. Enough for MODEL_CARD.md; not a general converter."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):  # fenced code, shown verbatim
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1:end])) + "</code></pre>")
            i = end + 1
        elif m := re.match(r"(#{1,6})\s+(.*)", line):
            level = min(len(m[1]) + top - 1, 6)
            out.append(f"<h{level}>{_inline(m[2])}</h{level}>")
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            body = [r for r in block[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r)]
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in block[0]) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body) + "</table>")
        elif re.match(r"([-*]|\d+\.)\s", line):
            tag = "ol" if line[0].isdigit() else "ul"
            items: list[str] = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("```", "#", "|")):
                if m := re.match(r"([-*]|\d+\.)\s+(.*)", lines[i]):
                    items.append(m[2])
                else:  # a continuation line of the item above
                    items[-1] += " " + lines[i].strip()
                i += 1
            out.append(f"<{tag}>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + f"</{tag}>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"(```|#{1,6}\s|\||([-*]|\d+\.)\s)", lines[i]):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


def _inline(text: str) -> str:
    """`code`, **bold** and *emphasis* within one line of escaped text; code spans are left as written."""
    parts = re.split(r"(`[^`]*`)", text)
    for k, part in enumerate(parts):
        if k % 2:
            parts[k] = f"<code>{html.escape(part[1:-1])}</code>"
        else:
            part = html.escape(part)
            part = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", part)
            parts[k] = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<i>\1</i>", part)
    return "".join(parts)
