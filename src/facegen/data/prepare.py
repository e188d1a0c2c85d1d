"""`facegen data prepare`: photos (folder, archive, CelebA layout, HF dataset) -> face store.

Steps: list the source's files (sorted) -> read bytes in the main process -> decode, crop
and resize in worker processes (chunks, results kept in order) -> append each face to a
work file as it arrives (data/partial.py: a killed run continues from there) -> once every
file is decoded: skip the bad ones with a reason, drop exact duplicates, keep K faces apart
as the holdout (by seed) -> copy the faces in name order into the store's .npy files
(store.write_rows, optionally in shards) -> rename the finished store into place.

Memory does not grow with the faces: the chunks in flight, one copy buffer, and some 30 to
45 bytes per file: its face count, first row and pixel hash (data/partial.py), the sort that
finds duplicates, 8 bytes per face for the rows to copy. The names stay on disk
(data/names.py), the journal is read a line at a time, the workers get chunks of files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from itertools import compress
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from facegen.data.decode import decode_rgb
from facegen.data.store import MANIFEST, FaceStore, partial_dir, write_rows
from facegen.data.transforms import RESIZE_FILTER, Skip, crop_celeba, crop_center
from facegen.utils import FacegenError, replace_dir

CROPS = ("celeba", "center", "align")
CHUNK_FILES = 64  # files per worker task: large enough to hide the inter-process overhead
CHUNKS_IN_FLIGHT = 4  # per worker: keeps workers busy while bounding memory
PLAN_FILES = 1 << 14  # files handled at a time when planning the store: its temporary arrays stay small
INSTALLING = "installing"  # in the work folder: its store is (being) renamed into place


class Result(NamedTuple):
    name: str  # the file's name inside the source
    faces: list[np.ndarray] | int  # uint8 (size, size, 3) each, empty when skipped; or their count when spilled to a file
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
    progress: bool = True,  # show progress bars and a summary on the terminal
    shards: int = 1,  # write the store as this many shards (consecutive rows of every split)
) -> FaceStore:
    """Build a face store from a photo source. Returns the written store.

    Interrupted (Ctrl-C, SIGKILL, power loss), the same call continues where it stopped.
    """
    from facegen.data.partial import Partial
    from facegen.data.sources import open_sources
    from facegen.progress import counting_bar

    crop_options = dict(crop_options or {})
    _check_arguments(size, crop, holdout, limit, crop_options, shards)
    _check_holdout(holdout, limit, crop_options)
    out = Path(out)
    _remove_installed_work(out)
    srcs = list(src) if isinstance(src, (list, tuple)) else [src]
    for one in srcs:
        _check_out(one, out, overwrite)
    source = open_sources(srcs)
    names, splits, skipped = _candidates(source, limit)
    considered = len(names) + len(skipped)

    import facegen

    started = time.perf_counter()
    task = dict(crop=crop, size=size, allow_upscale=allow_upscale, crop_options=crop_options)
    job = {"facegen_version": facegen.__version__, "source": source.describe(), **task, "limit": limit}
    partial = Partial(out, job, names, (size, size, 3))
    partial.open()
    try:
        if progress and partial.restarted:
            _say(f"{partial.dir} held work of a prepare with other arguments; starting again")
        todo = partial.todo()
        with counting_bar("preparing", len(names), progress, done=len(names) - len(todo)) as advance:
            try:
                for results, spilled in _run(source.read(todo), task, workers, advance, partial.dir) if todo else ():
                    if spilled is not None:
                        partial.take_faces(spilled)
                    for r in results:
                        partial.add(*r)
            except KeyboardInterrupt:
                decoded = int((partial.count >= 0).sum())
                if progress and decoded:
                    _say(f"interrupted: {decoded:,} of {len(names):,} files decoded, kept in "
                         f"{partial.dir}; run the same command again to continue")
                raise
            finally:
                partial.stop_decoding()
        try:
            rows, skipped = _plan(partial, splits, skipped, holdout, seed, source.location)
        except FacegenError as e:
            if not partial.rows:  # not one face decoded: nothing worth keeping for a next run
                partial.remove()
                raise
            raise FacegenError(f"{e} (the decoded faces stay in {partial.dir} for the next run)") from None
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
                "faces": sum(len(r) for r in rows.values()),
                "skipped": len(skipped),
                "duplicates": sum(1 for s in skipped if s["reason"].startswith("exact duplicate")),
            },
            "skipped": skipped,
        }
        if partial.store_dir.exists():  # a store half written when the last run stopped
            shutil.rmtree(partial.store_dir)
        partial.store_dir.mkdir()
        with counting_bar("writing the store", manifest["counts"]["faces"], progress) as advance:
            write_rows(partial.store_dir, partial.faces_file, partial.face_shape, rows, manifest, shards, advance)
        (partial.dir / INSTALLING).touch()  # from here on the work folder is no longer needed
        replace_dir(partial.store_dir, out, overwrite)
        partial.remove()
    except BaseException:
        if partial.dir.exists() and not (partial.count >= 0).any():  # stopped before a file was decoded: nothing to continue
            partial.remove()
        raise
    finally:
        partial.release()
    store = FaceStore(out)
    if progress:
        _print_summary(store, time.perf_counter() - started, partial.resumed)
    return store


# ---- checks before any work -------------------------------------------------------------


def _check_arguments(size, crop, holdout, limit, crop_options, shards) -> None:
    if crop not in CROPS:
        raise FacegenError(f"unknown crop {crop!r}; use one of {', '.join(CROPS)}")
    if size < 8:
        raise FacegenError(f"--size {size} is too small; use 8 pixels or more (64 is typical)")
    if holdout < 0 or (limit is not None and limit < 1):
        raise FacegenError("--holdout must be >= 0 and --limit >= 1")
    if crop_options and crop != "align":
        raise FacegenError(f"{', '.join(crop_options)} only apply to --crop align; drop them or use --crop align")
    if shards < 1:
        raise FacegenError(f"--shards {shards}: use 1 (one store) or more")


def _check_holdout(holdout: int, limit: int | None, crop_options: dict) -> None:
    """--holdout of --limit or more, refused before decoding: each file gives at most one face, unless
    --all-faces takes every face of a group photo. (A holdout of every face found is refused once
    the faces are decoded, by _plan, which keeps them for the next run.)"""
    if limit is not None and holdout >= limit and not crop_options.get("all_faces"):
        raise FacegenError(f"--holdout {holdout} leaves no training faces: --limit {limit} reads {limit} files of one face at most; "
                           f"use a --holdout below {limit} (e.g. --holdout {max(1, limit // 10)}) or a larger --limit")


def _check_out(src, out: Path, overwrite: bool) -> None:
    """Refuse before decoding anything: SRC itself, an existing store, an unwritable place."""
    if not str(src).startswith("hf:"):
        src_path, out_path = Path(src).resolve(), out.resolve()
        if src_path == out_path or out_path in src_path.parents:
            raise FacegenError(f"--out {out} would replace the source {src}; choose another --out")
        if src_path in out_path.parents:  # the next prepare would read the store as photos
            raise FacegenError(f"--out {out} is inside the source {src}; choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise FacegenError(f"--out {out} is a file, not a face store folder; choose another --out (or move the file away)")
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


def _remove_installed_work(out: Path) -> None:
    """A run killed between renaming its store into place and removing its work folder left
    that folder behind (its store/ gone): remove it, unless another prepare holds it."""
    from filelock import FileLock, Timeout

    work = partial_dir(out)
    if (work / INSTALLING).exists() and not (work / "store").exists():
        try:
            with FileLock(work / "lock", timeout=0):
                shutil.rmtree(work)
        except Timeout:
            pass


def _candidates(source, limit: int | None):
    """The files to decode (Names), their split codes (CelebA layout; else None), and the files
    skipped before decoding (not in CelebA's partition)."""
    from facegen.data.sources import UNLISTED

    names, splits, skipped = source.names, source.splits, []
    if splits is not None:
        listed = splits != UNLISTED
        if not listed.all():
            skipped = [{"file": n, "reason": "not listed in list_eval_partition"} for n in compress(names, ~listed)]
            names, splits = names.subset(listed), splits[listed]
    if limit is not None:
        names, splits = names[:limit], None if splits is None else splits[:limit]
    return names, splits, skipped


# ---- decoding in worker processes ------------------------------------------------------


def _run(items: Iterable, task: dict, workers: int | None, advance, spill: Path) -> Iterator[tuple[list[Result], Path | None]]:
    """(results, spilled) for each chunk of (name, payload), in input order, over a process pool.

    Pool workers write a chunk's faces to a file in `spill` and return their counts (spilled:
    that file): megabytes of faces never cross the pipe, whose big transient buffers would make
    the main process's memory creep (glibc's growing mmap threshold fragments its heap).
    Without a pool the faces come as arrays (spilled: None).
    """
    workers = workers or len(os.sched_getaffinity(0))
    chunks = _chunks(items, CHUNK_FILES)
    if workers == 1:
        for chunk in chunks:
            yield _process_chunk(chunk, None, **task), None
            advance(len(chunk))
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        try:
            for k, chunk in enumerate(chunks):
                file = spill / f"chunk-{k:08d}.u8"
                pending.append((len(chunk), file, pool.submit(_process_chunk, chunk, str(file), **task)))
                if len(pending) >= CHUNKS_IN_FLIGHT * workers:
                    yield _finish(pending.popleft(), advance)
            while pending:
                yield _finish(pending.popleft(), advance)
        except BaseException:  # Ctrl-C: drop queued chunks instead of decoding them first
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _finish(entry, advance) -> tuple[list[Result], Path]:
    count, file, future = entry
    results = future.result()
    advance(count)
    return results, file


def _chunks(items: Iterable, n: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _process_chunk(chunk: list, spill: str | None, **task) -> list[Result]:
    """Results of a chunk; with `spill`, its faces written there in order and counted in Result.faces."""
    results = [_process_one(name, payload, **task) for name, payload in chunk]
    if spill is None:
        return results
    with open(spill, "wb") as f:
        for r in results:
            for face in r.faces:
                f.write(np.ascontiguousarray(face, np.uint8).data)
    return [r._replace(faces=len(r.faces)) for r in results]


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


# ---- planning the store -------------------------------------------------------------------


def _plan(partial, splits: np.ndarray | None, skipped: list[dict], holdout: int, seed: int, location: str):
    """Rows of the work file for each split, in name order; skips and exact duplicates listed with
    their reason. The same choices as ever: first file (by name) of equal pixels kept, splits
    train/val/test, then `holdout` train faces moved to "holdout" by `seed`, order kept.

    Memory: one sort order (8 bytes a file) besides the partial's arrays, then the rows (8 bytes
    a face); the other temporary arrays are PLAN_FILES files at a time. The pixel hashes are
    dropped from `partial` once duplicates are found."""
    from facegen.data.sources import SPLITS

    names, count, first = partial.names, partial.count, partial.first
    kept = np.ones(len(names), dtype=bool)  # has faces, and is no duplicate
    kept[list(partial.reasons)] = False
    duplicates = _duplicates(partial.digest, kept)  # (file, the first file with its pixels), by rank
    partial.digest = None  # not needed any more: 20 bytes a file
    for i, _ in duplicates:
        kept[i] = False
    mentioned = sorted({*partial.reasons, *(i for pair in duplicates for i in pair)})
    named = {i: names[i] for i in mentioned}  # in rank order: each block of names is read once
    skipped = skipped + [{"file": named[i], "reason": reason} for i, reason in partial.reasons.items()]
    skipped += [{"file": named[i], "reason": f"exact duplicate of {named[o]}"} for i, o in duplicates]
    skipped.sort(key=lambda s: s["file"])
    if not kept.any():
        reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:3])
        raise FacegenError(f"no usable face in the source ({len(skipped)} files skipped, e.g. {reasons})")
    rows = {}
    for code, name in enumerate(SPLITS):  # "train" first; the others only with the CelebA layout
        files = kept if splits is None else kept & (splits == code)
        if files.any():
            rows[name] = _rows(files, count, first)
        if splits is None:
            break
    if holdout == 0:
        return rows, skipped
    train = rows.pop("train", np.zeros(0, np.int64))
    if holdout >= len(train):
        raise FacegenError(f"--holdout {holdout} leaves no training faces: {location} gave {len(train)}; use a smaller --holdout")
    picked = np.zeros(len(train), dtype=bool)
    picked[np.random.default_rng(seed).choice(len(train), holdout, replace=False)] = True
    return {"train": train[~picked], "holdout": train[picked], **rows}, skipped


def _duplicates(digest: np.ndarray, usable: np.ndarray) -> list[tuple[int, int]]:
    """(i, o) for each usable file i whose digest an earlier usable file o (the first by rank)
    has: what np.unique(digest[usable], return_index=True) finds, with one sort order (a stable
    sort keeps equal digests in rank order) instead of np.unique's several copies."""
    order = np.argsort(digest, kind="stable")
    pairs: list[tuple[int, int]] = []
    last, last_first = None, -1  # digest of the run the previous piece ended in, and its first file
    for start in range(0, len(order), PLAN_FILES):
        files = order[start:start + PLAN_FILES]
        files = files[usable[files]]
        if not len(files):
            continue
        d = digest[files]
        starts = np.empty(len(files), dtype=bool)
        starts[0] = last is None or d[0] != last
        starts[1:] = d[1:] != d[:-1]
        at = np.maximum.accumulate(np.where(starts, np.arange(len(files)), -1))  # where each file's run starts here
        firsts = np.where(at >= 0, files[np.maximum(at, 0)], last_first)
        pairs += zip(files[~starts].tolist(), firsts[~starts].tolist())
        last, last_first = d[-1], int(firsts[-1])
    pairs.sort()
    return pairs


def _rows(files: np.ndarray, count: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Rows of the work file of the faces of `files` (a bool per file), in name order: each
    file's faces are consecutive there from first[file]."""
    rows = np.empty(int(np.sum(count, where=files, dtype=np.int64)), dtype=np.int64)
    filled = 0
    for start in range(0, len(files), PLAN_FILES):
        picked = start + np.flatnonzero(files[start:start + PLAN_FILES])
        n = count[picked].astype(np.int64)
        total = int(n.sum())
        rows[filled:filled + total] = np.repeat(first[picked] - (np.cumsum(n) - n), n) + np.arange(total)
        filled += total
    return rows


# ---- terminal output -------------------------------------------------------------------


def _say(text: str) -> None:
    from rich.console import Console

    Console(stderr=True, soft_wrap=True).print(text, markup=False)  # long paths stay on one line in logs


def _print_summary(store: FaceStore, seconds: float, resumed: int) -> None:
    from rich.console import Console

    m = store.manifest
    splits = " + ".join(f"{n:,} {name}" for name, n in m["splits"].items())
    shards = f" in {store.num_shards} shards" if store.num_shards > 1 else ""
    resumed = f", continuing from {resumed:,} files decoded before" if resumed else ""
    console = Console(stderr=True, soft_wrap=True)  # long paths stay on one line in logs
    console.print(f"wrote {store.path}: {splits} faces at {m['size']}x{m['size']}{shards} "
                  f"({m['counts']['skipped']} skipped) in {seconds:.1f} s{resumed}", markup=False)
    for s in m["skipped"][:10]:
        console.print(f"  skipped {s['file']}: {s['reason']}", markup=False)
    if len(m["skipped"]) > 10:
        console.print(f"  ... {len(m['skipped']) - 10} more in {store.path / MANIFEST}")
