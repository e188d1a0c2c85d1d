"""`facegen compare`: a results table over runs, mean +/- std over seeds, like a paper's.

Grouping rule: a report belongs to the group named after its source (run or folder name)
with a leading run number and a trailing seed suffix removed:
    00012-ffhq64-ddpm-seed3  ->  ffhq64-ddpm        (leading "<digits>-" and "-seed<N>")
    dcgan_seed0              ->  dcgan              ("_seed<N>" too; case-insensitive)
A figure is comparable with its column only when it was computed with the same number of
generated and reference pictures on the same reference set (store content hash and
split); figures that differ from the column's most common protocol are marked with a dagger.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

from facegen.utils import FacegenError

# (column title, path into metrics.json's "metrics", field, scale, digits)
COLUMNS = [
    ("FID", ("fid",), "value", 1, 2),
    ("KID x1e3", ("kid",), "value", 1e3, 2),
    ("precision", ("precision",), "value", 1, 3),
    ("recall", ("recall",), "value", 1, 3),
    ("density", ("density",), "value", 1, 3),
    ("coverage", ("coverage",), "value", 1, 3),
    ("copies (Inception)", ("memorization", "inception"), "copy_share", 1, 3),
    ("copies (pixels)", ("memorization", "pixels"), "copy_share", 1, 3),
    ("uniqueness", ("memorization", "identity"), "uniqueness", 1, 3),
    ("one face", ("faces", "generated"), "one_face_share", 1, 3),
]
DAGGER = "†"


def group_name(name: str) -> str:
    name = re.sub(r"^\d+-", "", name)
    return re.sub(r"[-_]seed\d+$", "", name, flags=re.IGNORECASE) or name


def find_report(path: str | Path) -> Path:
    """metrics.json of a report folder, a run directory (RUN/eval) or the file itself."""
    path = Path(path)
    for candidate in (path, path / "metrics.json", path / "eval" / "metrics.json"):
        if candidate.is_file() and candidate.name == "metrics.json":
            return candidate
    raise FacegenError(f"{path}: no evaluation report (metrics.json) found; run `facegen eval {path} --ref STORE` first")


def cell(report: dict, column: tuple) -> tuple[float, tuple] | None:
    """(value, protocol) of one column in one report, or None when it was not measured."""
    _, path, field, scale, _ = column
    entry = report["metrics"]
    for key in path:
        entry = entry.get(key, {}) if isinstance(entry, dict) else {}
    if entry.get(field) is None:
        return None
    ref = report["reference"]
    # k-NN metrics compare equal counts (the larger set subsampled): that count is part of the protocol
    protocol = (entry.get("n_generated", entry.get("n")), entry.get("n_reference"), ref["content_hash"], ref["split"],
                entry.get("n_compared_each"))
    return float(entry[field]) * scale, protocol


def compare(paths, out: str | Path | None = None, show: bool = True) -> str:
    """Build the table; print it with rich when `show`; write markdown to `out`. Returns the markdown."""
    if not paths:
        raise FacegenError("give at least one run directory or report folder to compare")
    reports = [json.loads(find_report(p).read_text()) for p in paths]
    groups: dict[str, list[dict]] = {}
    for r in reports:
        groups.setdefault(group_name(r["source"]["name"]), []).append(r)
    columns = [c for c in COLUMNS if any(cell(r, c) for r in reports)]
    # the most common protocol of each column is its baseline; others get a dagger
    baseline = {c[0]: Counter(cell(r, c)[1] for r in reports if cell(r, c)).most_common(1)[0][0] for c in columns}

    header = ["run", "seeds"] + [c[0] for c in columns]
    rows = []
    for name, members in groups.items():
        row = [name, str(len(members))]
        for column in columns:
            title, digits = column[0], column[4]
            cells = [cell(r, column) for r in members]
            values = [c[0] for c in cells if c]
            if not values:
                row.append("-")
                continue
            mark = DAGGER if any(c and c[1] != baseline[title] for c in cells) else ""
            spread = f" ± {np.std(values, ddof=1):.{digits}f}" if len(values) > 1 else ""
            row.append(f"{np.mean(values):.{digits}f}{spread}{mark}")
        rows.append(row)

    notes = ["Mean ± standard deviation over seeds (groups by run name without its run number and -seedN suffix)."]
    if any(DAGGER in c for row in rows for c in row):
        notes.append(f"{DAGGER} not comparable with the rest of its column: different sample counts or reference set.")
    by_protocol: dict[tuple, list[str]] = {}
    for title, *_ in columns:
        by_protocol.setdefault(baseline[title], []).append(title)
    for (n_gen, n_ref, ref_hash, split, n_each), titles in by_protocol.items():
        if n_ref:
            equal = f", {n_each} of each compared (the larger set subsampled)" if n_each and n_gen != n_ref else ""
            notes.append(f"{', '.join(titles)}: {n_gen} generated pictures vs {n_ref} reference pictures ({split!r} of store {ref_hash[:12]}){equal}.")
        else:  # a per-picture check (the face check): no reference set enters the figure
            notes.append(f"{', '.join(titles)}: share of {n_gen} generated pictures (reference store {ref_hash[:12]}).")
    markdown = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                         + ["| " + " | ".join(r) + " |" for r in rows] + [""] + [f"- {n}" for n in notes]) + "\n"
    if show:
        print_table(header, rows, notes)
    if out:
        from facegen.utils import atomic_write_text

        atomic_write_text(out, markdown)
    return markdown


def print_table(header: list[str], rows: list[list[str]], notes: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*header)
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    for n in notes:
        console.print(f"  {n}", style="dim", highlight=False)
