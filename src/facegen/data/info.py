"""`facegen data info`: what a face store holds, and a contact sheet of random faces."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from facegen.data.store import FaceStore
from facegen.utils import FacegenError, make_grid, save_png

SHEET_NAME = "contact-sheet.png"


def store_info(
    store: FaceStore | str | Path,  # the store to describe
    sheet: str | Path | None = None,  # PNG to write; None: inside the store, or beside it if read-only
    faces: int = 64,  # faces on the sheet (fewer if the store is smaller)
    seed: int = 0,  # picks the faces on the sheet
) -> Path:
    """Print the manifest summary, write the contact sheet, return the sheet's path."""
    store = store if isinstance(store, FaceStore) else FaceStore(store)
    sheet = Path(sheet) if sheet else default_sheet_path(store.path)
    save_png(sheet, contact_sheet(store, faces, seed))
    _print_summary(store, sheet)
    return sheet


def default_sheet_path(store_path: Path) -> Path:
    """STORE/contact-sheet.png; STORE-contact-sheet.png beside it when the store is read-only."""
    for folder, name in ((store_path, SHEET_NAME), (store_path.parent, f"{store_path.name}-{SHEET_NAME}")):
        if os.access(folder, os.W_OK | os.X_OK):
            return folder / name
    raise FacegenError(f"cannot write a contact sheet in or beside {store_path}; give one with --sheet PATH")


def contact_sheet(store: FaceStore, faces: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 grid of `faces` training faces drawn at random (sorted, so reading stays local)."""
    train = store.split("train")
    picks = np.sort(np.random.default_rng(seed).choice(len(train), min(faces, len(train)), replace=False))
    return make_grid(train[picks])


def _print_summary(store: FaceStore, sheet: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    m = store.manifest
    table = Table(title=f"face store {store.path}", show_header=False)
    rows = [
        ("source", _source_summary(m)),
        ("faces", f"{m['size']}x{m['size']}, crop {m.get('crop', '?')}" + _options(m.get("crop_options"))),
        ("splits", ", ".join(f"{name} {n:,}" for name, n in m["splits"].items())
         + (f" in {store.num_shards} shards" if store.num_shards > 1 else "")),
        ("holdout", _holdout_summary(m)),
        ("skipped", _skip_summary(m.get("skipped", []))),
        ("resize", m.get("resize", "?")),
        ("content hash", m["content_hash"]),
        ("facegen", m.get("facegen_version", "?")),
        ("contact sheet", str(sheet)),
    ]
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # the full content hash, never an ellipsis
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)


def _source_summary(m: dict) -> str:
    """Where the faces come from; with --limit, how many of the source's files were read."""
    source = m.get("source", {})
    files, limit = source.get("files", "?"), m.get("limit")
    if limit is not None and isinstance(files, int) and limit < files:
        return f"{source.get('location', '?')} ({source.get('kind', '?')}): the first {limit:,} of its {files:,} files (--limit {limit})"
    return f"{source.get('location', '?')} ({source.get('kind', '?')}, {files if not isinstance(files, int) else f'{files:,}'} files)"


def _holdout_summary(m: dict) -> str:
    """The held-out faces, or that there are none (and what that means for evaluation)."""
    held_out = m["splits"].get("holdout", 0)
    if not held_out:
        return "none: every face is for training (prepare with --holdout N to keep faces apart for `facegen eval`)"
    return f"{held_out:,} faces kept apart from training, chosen with seed {m.get('seed', 0)}"


def _options(options: dict | None) -> str:
    return f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else ""


def _skip_summary(skipped: list[dict]) -> str:
    """'3 files: 2 not an image, 1 exact duplicate' (reasons grouped, details trimmed)."""
    if not skipped:
        return "none"
    reasons = Counter(s["reason"].split(" (")[0].split(" of ")[0] for s in skipped)
    return f"{len(skipped)} files: " + ", ".join(f"{n} {r}" for r, n in reasons.most_common(6))
