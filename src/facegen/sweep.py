"""`facegen sweep`: one model sampled at several guidance scales, each scored by `facegen eval`.

    sweep("runs/sd", ref="stores/celeba512", scales=[1.5, 3, 5, 7.5], n=10_000, out="runs/sd/sweep")

Scale g's faces go to OUT/guidance-<g>/samples (seeds 0..n-1, resumable: a killed sweep
continues where it stopped) with its full report beside them; OUT/sweep.json and
OUT/sweep.md tabulate every metric per scale with its sample counts. The same seeds at
every scale: only the guidance differs between rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from facegen.utils import FacegenError, atomic_write_json, atomic_write_text

# (column title, metric name in evaluate's results, scale of the printed value)
COLUMNS = [("FID", "fid", 1.0), ("KID x1e3", "kid", 1e3), ("precision", "precision", 1.0), ("recall", "recall", 1.0)]


def parse_scales(text: str | Sequence[float]) -> list[float]:
    """'1.5,3,5,7.5' -> [1.5, 3.0, 5.0, 7.5]."""
    try:
        scales = [float(s) for s in (text.split(",") if isinstance(text, str) else text) if str(s).strip()]
    except ValueError:
        raise FacegenError(f"bad guidance scales {text!r}: write numbers separated by commas, e.g. 1.5,3,5,7.5") from None
    if not scales or any(s < 0 for s in scales):
        raise FacegenError(f"bad guidance scales {text!r}: give one or more non-negative numbers, e.g. 1.5,3,5,7.5")
    return scales


def sweep(run: str | Path, ref: str | Path, scales: str | Sequence[float], *, n: int = 10_000, out: str | Path | None = None,
          metrics: str = "fid,kid", split: str | None = None, sample_options: dict | None = None, batch_size: int = 32,
          progress: bool = True) -> dict:
    """Evaluate the model at each guidance scale; write and return the table."""
    from facegen.evaluate import evaluate

    scales, out = parse_scales(scales), Path(out) if out else Path(run) / "sweep"
    rows = []
    for g in scales:
        report = evaluate(run, ref, split=split, metrics=metrics, n=n, out=out / f"guidance-{g:g}", batch_size=batch_size,
                          sample_options={**(sample_options or {}), "guidance_scale": g}, progress=progress)
        rows.append({"guidance_scale": g, "report": report["out"], "metrics": report["metrics"]})
    table = {"run": str(run), "reference": str(ref), "n": n, "sample_options": sample_options or {}, "rows": rows}
    atomic_write_json(out / "sweep.json", table)
    atomic_write_text(out / "sweep.md", to_markdown(table))
    table["out"] = str(out)
    return table


def to_markdown(table: dict) -> str:
    """The table: one row per guidance scale, a column per metric present, counts in brackets."""
    present = [c for c in COLUMNS if any(c[1] in row["metrics"] for row in table["rows"])]
    lines = [f"Guidance sweep of {table['run']} against {table['reference']} ({table['n']:,} faces per scale, "
             f"same seeds; options {table['sample_options'] or 'default'})", "",
             "| guidance | " + " | ".join(title for title, _, _ in present) + " |",
             "|---:|" + "---:|" * len(present)]
    for row in table["rows"]:
        cells = []
        for _, name, scale in present:
            entry = row["metrics"].get(name)
            cells.append(f"{entry['value'] * scale:.3f} ({entry['n_generated']}/{entry['n_reference']})" if entry else "n/a")
        lines.append(f"| {row['guidance_scale']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
