"""`facegen compare`: a results table over runs, mean +/- std over seeds, like a paper's.

Grouping rule: a report belongs to the group named after its source (run or folder name)
with a leading run number and a trailing seed suffix removed:
    00012-ffhq64-ddpm-seed3  ->  ffhq64-ddpm        (leading "<digits>-" and "-seed<N>")
    dcgan_seed0              ->  dcgan              ("_seed<N>" too; case-insensitive)
and made with the same model kind and sampling settings (its samples' provenance record:
family, resolution, sampler, steps, psi, ...): two evaluations of one run with other
--sampler, --steps or --truncation are two rows, labelled with the settings that tell them
apart ("ffhq64-ddpm (sampler ddim, steps 50)"). Reports without a record group by name alone.
A figure is comparable with its column only when it was made with the same protocol: the
same feature network (sha256) and resize, the same reference set (store content hash and
split) and counts, the same k or subsets, and for the memorization columns the same
searched training faces. The column's most common protocol is its baseline, named in the
notes. Figures of another protocol are never averaged with the rest: a group's cell shows
one mean per protocol ("50.00 / 70.00†1"), and each numbered dagger's note says what
differs from the column's baseline.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegen.utils import FacegenError


@dataclass(frozen=True)
class Column:
    title: str
    path: tuple        # keys into metrics.json's "metrics"
    field: str
    scale: float
    digits: int
    kind: str          # what decides the figure: "distribution", "inception search", "search" or "per picture"


COLUMNS = [
    Column("FID", ("fid",), "value", 1, 2, "distribution"),
    Column("KID x1e3", ("kid",), "value", 1e3, 2, "distribution"),
    Column("precision", ("precision",), "value", 1, 3, "distribution"),
    Column("recall", ("recall",), "value", 1, 3, "distribution"),
    Column("density", ("density",), "value", 1, 3, "distribution"),
    Column("coverage", ("coverage",), "value", 1, 3, "distribution"),
    Column("copies (Inception)", ("memorization", "inception"), "copy_share", 1, 3, "inception search"),
    Column("copies (pixels)", ("memorization", "pixels"), "copy_share", 1, 3, "search"),
    Column("uniqueness", ("memorization", "identity"), "uniqueness", 1, 3, "search"),
    Column("one face", ("faces", "generated"), "one_face_share", 1, 3, "per picture"),
]
DAGGER = "†"
# the terminal's headers (the markdown keeps the full titles); the legend is printed below the table
SHORT = {"copies (Inception)": "copy Inc", "copies (pixels)": "copy px", "uniqueness": "uniq", "precision": "prec",
         "recall": "rec", "density": "dens", "coverage": "cov", "one face": "1 face"}

# protocol field -> (how a difference reads, how its value is shown); None shows as "unrecorded"
FIELDS = {
    "network": ("feature network {}", lambda v: v[:12]),
    "resize": ("resize {}", repr),
    "reference": ("reference {}", str),
    "n_reference": ("{} reference pictures", str),
    "searched": ("training faces of store {}", str),
    "n_train": ("{} training faces searched", str),
    "side": ("pixels at {} px", str),
    "n_generated": ("{} generated pictures", str),
    "n_compared_each": ("{} of each compared", str),
    "k": ("k = {}", str),
    "subsets": ("{} subsets", str),
}


def group_name(name: str) -> str:
    name = re.sub(r"^\d+-", "", name)
    return re.sub(r"[-_]seed\d+$", "", name, flags=re.IGNORECASE) or name


def settings_key(report: dict) -> tuple:
    """What made the samples besides the weights: the model kind and every sampling setting,
    from the samples' provenance record (empty when the report has none)."""
    record = report["source"].get("samples") or {}
    model, settings = record.get("model", {}), record.get("settings", {})
    return tuple(sorted(model.items())) + tuple(sorted((k, json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v)
                                                       for k, v in settings.items()))


def row_labels(keys: list[tuple]) -> dict[tuple, str]:
    """Group (name, settings) -> its row's label: the name, and where one name has several
    settings, the settings that differ between them ("ddpm (sampler ddim, steps 50)")."""
    labels = {}
    for name, settings in keys:
        others = [dict(k[1]) for k in keys if k[0] == name]
        mine = dict(settings)
        differ = [key for key in dict.fromkeys(key for o in others for key in o) if any(o.get(key) != mine.get(key) for o in others)]
        shown_settings = ", ".join(f"{key} {_value(mine.get(key))}" for key in differ)
        labels[(name, settings)] = f"{name} ({shown_settings})" if shown_settings else name
    return labels


def _value(value) -> str:
    if value is None:
        return "unrecorded"
    return f"{value:g}" if isinstance(value, float) else str(value)


def find_report(path: str | Path) -> Path:
    """metrics.json of a report folder, a run directory (RUN/eval) or the file itself."""
    path = Path(path)
    for candidate in (path, path / "metrics.json", path / "eval" / "metrics.json"):
        if candidate.is_file() and candidate.name == "metrics.json":
            return candidate
    raise FacegenError(f"{path}: no evaluation report (metrics.json) found; run `facegen eval {path} --ref STORE` first")


def cell(report: dict, column: Column) -> tuple[float, tuple] | None:
    """(value, protocol) of one column in one report, or None when it was not measured."""
    entry = report["metrics"]
    for key in column.path:
        entry = entry.get(key, {}) if isinstance(entry, dict) else {}
    if entry.get(column.field) is None:
        return None
    return float(entry[column.field]) * column.scale, protocol(report, column, entry)


def protocol(report: dict, column: Column, entry: dict) -> tuple:
    """What decides one figure besides the model, as (field, value) pairs of FIELDS."""
    features, ref = report.get("feature_network", {}), report["reference"]
    mem = report["metrics"].get("memorization", {})
    fields: dict = {}
    if column.kind in ("distribution", "inception search"):
        fields |= {"network": features.get("sha256"), "resize": features.get("resize")}
    if column.kind == "distribution":
        fields |= {"reference": f"{ref['split']!r} of store {ref['content_hash'][:12]}", "n_reference": entry.get("n_reference")}
    if column.kind.endswith("search"):
        # reports from before issue 26 searched the reference store's train split
        searched = mem.get("searched", {}).get("content_hash", ref["content_hash"])
        fields |= {"searched": searched[:12], "n_train": entry.get("n_train", mem.get("train_count"))}
    fields["n_generated"] = entry.get("n_generated", entry.get("n"))
    fields |= {key: entry[key] for key in ("side", "n_compared_each", "k", "subsets") if entry.get(key) is not None}
    return tuple(fields.items())


def differences(odd: tuple, baseline: tuple) -> str:
    """How protocol `odd` differs from the column's `baseline`, in words."""
    odd, base = dict(odd), dict(baseline)
    return "; ".join(f"{FIELDS[key][0].format(shown(key, odd.get(key)))} (column: {shown(key, base.get(key))})"
                     for key in {**odd, **base} if odd.get(key) != base.get(key))


def shown(key: str, value) -> str:
    return "unrecorded" if value is None else FIELDS[key][1](value)


def compare(paths, out: str | Path | None = None, show: bool = True) -> str:
    """Build the table; print it with rich when `show`; write markdown to `out`. Returns the markdown."""
    if not paths:
        raise FacegenError("give at least one run directory or report folder to compare")
    reports = [json.loads(find_report(p).read_text()) for p in paths]
    groups: dict[tuple, list[dict]] = {}
    for r in reports:
        groups.setdefault((group_name(r["source"]["name"]), settings_key(r)), []).append(r)
    labels = row_labels(list(groups))
    columns = [c for c in COLUMNS if any(cell(r, c) for r in reports)]
    # the most common protocol of each column is its baseline; others get a numbered dagger
    baseline = {c.title: Counter(cell(r, c)[1] for r in reports if cell(r, c)).most_common(1)[0][0] for c in columns}
    footnotes: dict[str, int] = {}  # difference in words -> its dagger's number

    header = ["run", "seeds"] + [c.title for c in columns]
    rows = []
    for key, members in groups.items():
        row = [labels[key], str(len(members))]
        for column in columns:
            cells = [c for c in (cell(r, column) for r in members) if c]
            row.append(cell_text(cells, column, baseline[column.title], footnotes) if cells else "-")
        rows.append(row)

    notes = [("Mean ± standard deviation over seeds (groups by run name without its run number and -seedN suffix, "
              "and by model and sampling settings).")]
    notes += [f"{DAGGER}{number} not comparable with the rest of its column: {text}." for text, number in footnotes.items()]
    by_text: dict[str, list[str]] = {}
    for column in columns:
        by_text.setdefault(baseline_note(column, baseline[column.title]), []).append(column.title)
    notes += [f"{', '.join(titles)}: {text}" for text, titles in by_text.items()]
    markdown = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                         + ["| " + " | ".join(r) + " |" for r in rows] + [""] + [f"- {n}" for n in notes]) + "\n"
    if show:
        print_table(header, rows, notes, [c.title for c in columns])
    if out:
        from facegen.utils import atomic_write_text

        atomic_write_text(out, markdown)
    return markdown


def cell_text(cells: list[tuple], column: Column, baseline: tuple, footnotes: dict) -> str:
    """One mean (± std) per protocol among a group's figures, the baseline's first; the others
    marked with the dagger of their difference (numbered in order of first use)."""
    by_protocol: dict[tuple, list[float]] = {}
    for value, proto in sorted(cells, key=lambda c: c[1] != baseline):  # stable: the baseline's figures first
        by_protocol.setdefault(proto, []).append(value)
    parts = []
    for proto, values in by_protocol.items():
        spread = f" ± {np.std(values, ddof=1):.{column.digits}f}" if len(values) > 1 else ""
        mark = ""
        if proto != baseline:
            mark = f"{DAGGER}{footnotes.setdefault(differences(proto, baseline), len(footnotes) + 1)}"
        parts.append(f"{np.mean(values):.{column.digits}f}{spread}{mark}")
    return " / ".join(parts)


def baseline_note(column: Column, proto: tuple) -> str:
    """The protocol of a column's unmarked figures, in words."""
    p = dict(proto)
    features = f"; features: network {p['network'][:12]}, resize {p['resize']!r}" if p.get("network") else ""
    if column.kind == "distribution":
        n_each = p.get("n_compared_each")
        equal = f", {n_each} of each compared (the larger set subsampled)" if n_each and p["n_generated"] != p["n_reference"] else ""
        return f"{p['n_generated']} generated pictures vs {p['n_reference']} reference pictures ({p['reference']}){equal}{features}."
    if column.kind.endswith("search"):
        return (f"{p['n_generated']} generated pictures, each against its nearest of {p['n_train']} training faces "
                f"(store {p['searched']}){features}.")
    return f"share of {p['n_generated']} generated pictures."  # a per-picture check: no reference set enters the figure


RUN_WIDTH = 24  # the run column wraps beyond this


def print_table(header: list[str], rows: list[list[str]], notes: list[str], titles: list[str]) -> None:
    """The table on the terminal, within its width (80 columns when not a terminal): short
    headers with a legend, and as many tables as needed, each repeating the run column."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    short = [SHORT.get(h, h) for h in header]
    width = [min(RUN_WIDTH, max(len(str(c)) for c in [short[0], *(r[0] for r in rows)])) + 3]
    width += [max(len(str(c)) for c in [short[j], *(r[j] for r in rows)]) + 3 for j in range(1, len(header))]
    chunks, current = [], [1]  # column indices after the run column; seeds stays with the first
    for j in range(2, len(header)):
        fits = 1 + width[0] + sum(width[i] for i in current) + width[j] <= console.width
        if not fits and len(current) >= (1 if chunks else 2):  # a column too wide for any table gets its own
            chunks.append(current)
            current = []
        current.append(j)
    chunks.append(current)
    for chunk in chunks:
        table = Table(short[0], *(short[j] for j in chunk))
        table.columns[0].max_width = RUN_WIDTH
        table.columns[0].overflow = "fold"
        for row in rows:
            table.add_row(row[0], *(row[j] for j in chunk))
        console.print(table)
    legend = [f"{SHORT[t]} = {t}" for t in titles if t in SHORT]
    for n in notes + (["Headers: " + ", ".join(legend) + "."] if legend else []):
        console.print(f"  {n}", style="dim", highlight=False)
