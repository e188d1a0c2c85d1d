"""Put a trained run into the package as the embedded default model (maintainers only).

    python scripts/package_default_model.py RUN EVAL_DIR REFERENCE_FEATURES.npz --card-notes notes.md

Copies RUN/model/ (the export: weights + facegen.json), the reference features used by
`facegen demo`, the evaluation (metrics.json, report.md and its pictures) and a sample grid
into src/facegen/default/, and writes MODEL_CARD.md from the run's config and the
evaluation's numbers. The folder is replaced atomically.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml

from facegen.utils import atomic_dir

DEFAULT = Path(__file__).resolve().parents[1] / "src" / "facegen" / "default"


def metric_lines(metrics: dict) -> list[str]:
    m, lines = metrics["metrics"], []
    if "fid" in m:
        lo, hi = m["fid"].get("ci95", [None, None])
        lines.append(f"| FID | {m['fid']['value']:.2f} (95% bootstrap {lo:.2f}-{hi:.2f}) | {m['fid']['n_generated']:,} / {m['fid']['n_reference']:,} |")
    if "kid" in m:
        lines.append(f"| KID | {m['kid']['value']:.4f} ± {m['kid']['std']:.4f} | {m['kid']['n_generated']:,} / {m['kid']['n_reference']:,} |")
    for name in ("precision", "recall", "density", "coverage"):
        if name in m:
            each = m[name].get("n_compared_each")  # equal-count k-NN metrics: a seeded subsample of the larger set
            counts = f"{each:,} / {each:,} (of {m[name]['n_generated']:,} / {m[name]['n_reference']:,})" if each else \
                f"{m[name]['n_generated']:,} / {m[name]['n_reference']:,}"
            lines.append(f"| {name} (k={m[name].get('k')}) | {m[name]['value']:.3f} | {counts} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("eval_dir", type=Path)
    ap.add_argument("reference_features", type=Path)
    ap.add_argument("--card-notes", type=Path, help="Markdown appended to the card: commands, wall time, hardware.")
    ap.add_argument("--name", help="The name the page and /info show (facegen.json's name); default: the run's.")
    ap.add_argument("--recommended-psi", type=float, help="GAN: the truncation the page uses when a request names none "
                                                          "(measured: docs/gan.md); sampling and eval never apply it unasked.")
    args = ap.parse_args()

    cfg = yaml.safe_load((args.run / "config.yaml").read_text())
    metrics = json.loads((args.eval_dir / "metrics.json").read_text())
    rows = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = [row for row in rows if "kimg" in row][-1]  # the last training row (eval_every rows carry no kimg)
    mem = metrics["metrics"].get("memorization", {})
    faces = metrics["metrics"].get("faces", {})
    card = [
        f"# Model card: {args.name or cfg.get('name') or args.run.name}", "",
        f"Family `{cfg['family']}`, {cfg['resolution']}x{cfg['resolution']} faces, trained for {last['step']:,} steps "
        f"({last['kimg']:.0f}k images seen) at batch {cfg['batch_size']}.", "",
        "## Evaluation (facegen eval)", "",
        "Source of every number in this section, the face check and the memorization audit:",
        "`src/facegen/default/eval/metrics.json` (the packaged evaluation; its `command` field is the",
        "command below).", "",
        f"Reference: split `{metrics['reference']['split']}` of the store ({metrics['reference']['count']:,} held-out faces "
        f"never seen in training, content hash {metrics['reference']['content_hash'][:12]}).", "",
        f"Command: `{metrics['command']}`", "",
        "| metric | value | samples (generated / reference) |", "| --- | --- | --- |", *metric_lines(metrics), "",
    ]
    card += [f"Warning recorded with the numbers: {w}" for w in metrics.get("warnings", [])] + [""]
    if faces:
        g = faces["generated"]
        card += ["## Face check (dlib HOG)", "",
                 f"Exactly one face found in {g['one_face_share']:.1%} of {g['n']:,} samples "
                 f"(held-out real faces: {faces['reference']['one_face_share']:.1%} of {faces['reference']['n']:,}).", ""]
    if mem:
        card += ["## Memorization audit", "", "```", json.dumps({k: {kk: vv for kk, vv in v.items() if kk != 'flagged'}
                                                              for k, v in mem.items() if isinstance(v, dict)}, indent=1), "```", ""]
    card += ["## Training config", "", "```yaml", yaml.safe_dump(cfg, sort_keys=False).strip(), "```", ""]
    if args.card_notes:
        card += [args.card_notes.read_text()]

    with atomic_dir(DEFAULT, overwrite=True) as tmp:
        for f in (args.run / "model").iterdir():
            shutil.copy2(f, tmp / f.name) if f.is_file() else shutil.copytree(f, tmp / f.name)
        if args.name or args.recommended_psi:
            meta = json.loads((tmp / "facegen.json").read_text())
            meta |= {"name": args.name} if args.name else {}
            meta |= {"recommended_psi": args.recommended_psi} if args.recommended_psi else {}
            (tmp / "facegen.json").write_text(json.dumps(meta, indent=2) + "\n")
        shutil.copy2(args.reference_features, tmp / "reference-features.npz")
        (tmp / "eval").mkdir()
        for f in args.eval_dir.iterdir():
            if f.is_file() and f.suffix in (".json", ".md", ".png"):
                shutil.copy2(f, tmp / "eval" / f.name)
        shutil.copy2(args.run / "loss.png", tmp / "loss.png")
        (tmp / "MODEL_CARD.md").write_text("\n".join(card))
    print(f"wrote {DEFAULT}")


if __name__ == "__main__":
    main()
