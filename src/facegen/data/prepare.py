"""`facegen data prepare`: photos (folder, archive, CelebA layout, HF dataset) -> face store.

Steps: list the source's files (sorted) -> read bytes in the main process -> decode, crop
and resize in worker processes (chunks, results kept in order) -> skip the bad ones with
a reason, drop exact duplicates -> keep K faces apart as the holdout (by seed) -> write
the store under a temporary name and rename it (write_store).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from facegen.data.decode import decode_rgb
from facegen.data.store import MANIFEST, FaceStore, write_store
from facegen.data.transforms import RESIZE_FILTER, Skip, crop_celeba, crop_center
from facegen.utils import FacegenError

CROPS = ("celeba", "center", "align")
CHUNK_FILES = 64  # files per worker task: large enough to hide the inter-process overhead
CHUNKS_IN_FLIGHT = 4  # per worker: keeps workers busy while bounding memory


class Result(NamedTuple):
    name: str  # the file's name inside the source
    faces: list[np.ndarray]  # uint8 (size, size, 3) each; empty when skipped
    reason: str | None  # why it was skipped, or None
    pixel_hash: str | None  # of the decoded photo: equal hashes are exact duplicates


def prepare(
    src: str | Path | list,  # folder, .zip, .tar(.gz) or "hf:NAME[:SPLIT]"; a list merges several
    out: str | Path,  # the store folder to write
    size: int,  # side of the square faces, in pixels
    crop: str = "celeba",  # "celeba", "center" or "align"
    holdout: int = 0,  # faces kept apart from training as the evaluation reference
    limit: int | None = None,  # only the first N files of the source (sorted names); None: all
    seed: int = 0,  # chooses the holdout faces
    allow_upscale: bool = False,  # enlarge crops smaller than `size` instead of skipping them
    overwrite: bool = False,  # replace an existing store at `out`
    workers: int | None = None,  # decoding processes; None: every core of this machine
    crop_options: dict | None = None,  # passed to the align crop (all_faces, zoom, detector)
    progress: bool = True,  # show a progress bar and a summary on the terminal
) -> FaceStore:
    """Build a face store from a photo source. Returns the written store."""
    from facegen.data.sources import open_sources

    crop_options = dict(crop_options or {})
    _check_arguments(size, crop, holdout, limit, crop_options)
    out = Path(out)
    srcs = list(src) if isinstance(src, (list, tuple)) else [src]
    for one in srcs:
        _check_out(one, out, overwrite)
    source = open_sources(srcs)
    names, skipped = _candidates(source, limit)
    considered = len(names) + len(skipped)

    started = time.perf_counter()
    task = dict(crop=crop, size=size, allow_upscale=allow_upscale, crop_options=crop_options)
    from facegen.progress import counting_bar

    with counting_bar("preparing", len(names), progress) as advance:
        results = sorted(_run(source.read(names), task, workers, advance), key=lambda r: r.name)
    faces, skipped = _assemble(results, source.split_of, skipped)
    splits = {name: _stack(f) for name, f in _hold_out(faces, holdout, seed, source.location).items()}
    del faces

    import facegen

    manifest = {
        "facegen_version": facegen.__version__,
        "source": source.describe(),
        "crop": crop,
        "crop_options": crop_options,
        "size": size,
        "resize": RESIZE_FILTER if crop != "align" else "the alignment warp of facegen.data.align",
        "holdout": holdout,
        "seed": seed,
        "limit": limit,
        "allow_upscale": allow_upscale,
        "counts": {
            "files": considered,
            "faces": sum(len(a) for a in splits.values()),
            "skipped": len(skipped),
            "duplicates": sum(1 for s in skipped if s["reason"].startswith("exact duplicate")),
        },
        "skipped": skipped,
    }
    store = write_store(out, splits, manifest, overwrite=overwrite)
    if progress:
        _print_summary(store, time.perf_counter() - started)
    return store


# ---- checks before any work -------------------------------------------------------------


def _check_arguments(size, crop, holdout, limit, crop_options) -> None:
    if crop not in CROPS:
        raise FacegenError(f"unknown crop {crop!r}; use one of {', '.join(CROPS)}")
    if size < 8:
        raise FacegenError(f"--size {size} is too small; use 8 pixels or more (64 is typical)")
    if holdout < 0 or (limit is not None and limit < 1):
        raise FacegenError("--holdout must be >= 0 and --limit >= 1")
    if crop_options and crop != "align":
        raise FacegenError(f"{', '.join(crop_options)} only apply to --crop align; drop them or use --crop align")


def _check_out(src, out: Path, overwrite: bool) -> None:
    """Refuse before decoding anything: SRC itself, an existing store, an unwritable place."""
    if not str(src).startswith("hf:"):
        src_path, out_path = Path(src).resolve(), out.resolve()
        if src_path == out_path or out_path in src_path.parents:
            raise FacegenError(f"--out {out} would replace the source {src}; choose another --out")
        if src_path in out_path.parents:  # the next prepare would read the store as photos
            raise FacegenError(f"--out {out} is inside the source {src}; choose a folder outside it")
    if out.exists():
        if not overwrite:
            raise FacegenError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
        if not (out / MANIFEST).is_file() and (not out.is_dir() or any(out.iterdir())):
            raise FacegenError(f"{out} exists and is not a face store; refusing to replace it, choose another --out")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise FacegenError(f"cannot write in {parent} (a file, not a folder); choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FacegenError(f"cannot write in {parent} (permission denied); choose a writable --out")


def _candidates(source, limit: int | None) -> tuple[list[str], list[dict]]:
    """The files to decode, and the ones skipped before decoding (not in CelebA's partition)."""
    names, skipped = source.names, []
    if source.split_of is not None:
        skipped = [{"file": n, "reason": "not listed in list_eval_partition"} for n in names if n not in source.split_of]
        names = [n for n in names if n in source.split_of]
    return names[:limit], skipped


# ---- decoding in worker processes ------------------------------------------------------


def _run(items: Iterable, task: dict, workers: int | None, advance) -> Iterator[Result]:
    """Faces of every (name, payload), chunked over a process pool; results in input order."""
    workers = workers or len(os.sched_getaffinity(0))
    chunks = _chunks(items, CHUNK_FILES)
    if workers == 1:
        for chunk in chunks:
            yield from _process_chunk(chunk, **task)
            advance(len(chunk))
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        try:
            for chunk in chunks:
                pending.append((len(chunk), pool.submit(_process_chunk, chunk, **task)))
                if len(pending) >= CHUNKS_IN_FLIGHT * workers:
                    yield from _finish(pending.popleft(), advance)
            while pending:
                yield from _finish(pending.popleft(), advance)
        except BaseException:  # Ctrl-C: drop queued chunks instead of decoding them first
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _finish(entry, advance) -> list[Result]:
    count, future = entry
    results = future.result()
    advance(count)
    return results


def _chunks(items: Iterable, n: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _process_chunk(chunk: list, **task) -> list[Result]:
    return [_process_one(name, payload, **task) for name, payload in chunk]


def _process_one(name, payload, crop, size, allow_upscale, crop_options) -> Result:
    """One file -> its faces, or the reason it gives none. Never raises."""
    try:
        if isinstance(payload, Skip):
            raise payload
        # The square crops are resized to `size` anyway: decoding big JPEGs at >= 3x that
        # loses nothing. Alignment finds landmarks at full resolution.
        image = decode_rgb(payload, min_side=None if crop == "align" else 3 * size)
        pixel_hash = hashlib.sha1(str(image.shape).encode() + image.tobytes()).hexdigest()
        return Result(name, crop_faces(image, crop, size, allow_upscale, crop_options), None, pixel_hash)
    except Skip as e:
        return Result(name, [], e.reason, None)
    except Exception as e:  # anything else (a decoder bug, a bad header) is a skip, not a crash
        return Result(name, [], f"unreadable ({type(e).__name__}: {e})", None)


def crop_faces(image: np.ndarray, crop: str, size: int, allow_upscale: bool = False, crop_options: dict | None = None) -> list[np.ndarray]:
    """The square faces of one photo: one for celeba/center, zero or more for align."""
    if crop == "celeba":
        return [crop_celeba(image, size, allow_upscale)]
    if crop == "center":
        return [crop_center(image, size, allow_upscale)]
    from facegen.data.align import crop_align  # the alignment issue's hook; loads detectors

    faces = crop_align(image, size, **(crop_options or {}))
    if not faces:
        raise Skip("no face found")
    return faces


# ---- assembling the store --------------------------------------------------------------


def _assemble(results: list[Result], split_of: dict | None, skipped: list[dict]):
    """Faces per split in name order; skips and exact duplicates listed with their reason.

    Empties `results`, so the returned lists hold the only reference to each face.
    """
    faces: dict[str, list[np.ndarray]] = {}
    first_with_hash: dict[str, str] = {}
    skipped = list(skipped)
    for r in results:
        if r.reason is not None:
            skipped.append({"file": r.name, "reason": r.reason})
        elif r.pixel_hash in first_with_hash:
            skipped.append({"file": r.name, "reason": f"exact duplicate of {first_with_hash[r.pixel_hash]}"})
        else:
            first_with_hash[r.pixel_hash] = r.name
            faces.setdefault(split_of[r.name] if split_of else "train", []).extend(r.faces)
    results.clear()
    skipped.sort(key=lambda s: s["file"])
    if not faces:
        reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:3])
        raise FacegenError(f"no usable face in the source ({len(skipped)} files skipped, e.g. {reasons})")
    order = ["train", "val", "test"]
    return {name: faces[name] for name in sorted(faces, key=order.index)}, skipped


def _hold_out(faces: dict[str, list], holdout: int, seed: int, location: str) -> dict[str, list]:
    """Move `holdout` faces chosen by `seed` from train to a "holdout" split (order kept)."""
    if holdout == 0:
        return faces
    train = faces.pop("train", [])  # popped: the new lists become the only references
    if holdout >= len(train):
        raise FacegenError(f"--holdout {holdout} leaves no training faces: {location} gave {len(train)}; use a smaller --holdout")
    picked = np.zeros(len(train), dtype=bool)
    picked[np.random.default_rng(seed).choice(len(train), holdout, replace=False)] = True
    return {
        "train": [f for f, p in zip(train, picked) if not p],
        "holdout": [f for f, p in zip(train, picked) if p],
        **faces,
    }


def _stack(faces: list[np.ndarray]) -> np.ndarray:
    """np.stack that drops each face once copied: peak memory stays near one store's size."""
    out = np.empty((len(faces), *faces[0].shape), dtype=np.uint8)  # (n, size, size, 3)
    for i in range(len(faces)):
        out[i], faces[i] = faces[i], None
    return out


# ---- terminal output -------------------------------------------------------------------


def _print_summary(store: FaceStore, seconds: float) -> None:
    from rich.console import Console

    m = store.manifest
    splits = " + ".join(f"{n:,} {name}" for name, n in m["splits"].items())
    console = Console(stderr=True, soft_wrap=True)  # long paths stay on one line in logs
    console.print(f"wrote {store.path}: {splits} faces at {m['size']}x{m['size']} "
                  f"({m['counts']['skipped']} skipped) in {seconds:.1f} s")
    for s in m["skipped"][:10]:
        console.print(f"  skipped {s['file']}: {s['reason']}", markup=False)
    if len(m["skipped"]) > 10:
        console.print(f"  ... {len(m['skipped']) - 10} more in {store.path / MANIFEST}")
