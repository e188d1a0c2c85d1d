"""`facegen eval`: score generated faces against a face store and write a report.

    evaluate("runs/ddpm64", ref="stores/celeba64", n=10_000, out="runs/ddpm64/eval")

The input is a folder of images, a run directory or exported model (sampled first, seeds
0..n-1, into OUT/samples), or a second face store (real vs real: its train split). The
reference is the store's holdout split (a store without one needs --split named). A run's
recorded training store (RUN/config.yaml `data:`) is checked against the reference before
anything is sampled: reference faces the run trained on are refused unless allowed, and the
memorization audit searches those training faces; for other inputs it searches the
reference store's train split.
"""

from __future__ import annotations

import datetime
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegen.data.store import MANIFEST, FaceStore, subset_rows
from facegen.metrics.registry import FID_MIN_SAMPLES, METRICS
from facegen.utils import FacegenError

ALL_METRICS = ("fid", "kid", "pr", "dc", "mem", "faces")  # no "is": see parse_metrics
DEFAULT_METRICS = ("fid", "kid", "pr", "dc", "mem", "faces")
FID_WARN_SAMPLES = 10_000   # below this FID is noticeably biased upward: warned
FID_BOOTSTRAP_ROUNDS = METRICS["fid"].protocol["bootstrap_rounds"]  # the registry's; here so a test can shrink it
DEFAULT_RUN_SAMPLES = 10_000
PIXEL_SIDE = 32             # memorization in pixel space: colour pictures at 32x32
FACES_MAX = 1000            # face checks on at most this many pictures per set (dlib, ~0.1 s each), spread over each set
IDENTITY_MAX_GENERATED = 500
IDENTITY_MAX_TRAIN = 2000   # identity search pool: 2,000 training faces spread over the split (cached)
HASH_CHUNK_ROWS = 2048      # faces read and hashed at a time in the overlap check (25 MB at 64x64)


@dataclass
class Source:
    kind: str          # "folder", "run" or "store"
    path: Path
    name: str          # the run/folder/store name, used by `facegen compare` to group
    images: object     # sequence of uint8 (H, W, 3)
    store: FaceStore | None = None
    split: str | None = None
    spread: bool = False   # a store's rows: evenly spaced over the split (True) or all of it
    record: dict | None = None  # a sample folder's provenance record (facegen.sample.PROVENANCE)


@dataclass
class TrainingFaces:
    """The faces a run trained on, as far as its folder records them."""
    run: Path | None         # the run folder (None: the source is no run)
    recorded: str | None     # the store path in RUN/config.yaml (`data:`), if any
    store: FaceStore | None  # that store, when it is still there
    missing: str | None = None  # why there is none ("training store not found"), for metrics.json

    @property
    def note(self) -> str:
        return f"{self.missing}: overlap not checked"


def parse_metrics(text: str | tuple | list) -> tuple[str, ...]:
    names = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    if "is" in names:  # asked for often enough to deserve its own answer
        raise FacegenError("Inception Score is unavailable: the bundled FID network (default_1.pt) outputs pool "
                           "features only, no classifier logits; drop `is` from --metrics")
    unknown = [m for m in names if m not in ALL_METRICS]
    if unknown or not names:
        raise FacegenError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(ALL_METRICS)}")
    return tuple(dict.fromkeys(names))


def default_out(source: str | Path, psi: float | None = None) -> Path:
    """Report folder when --out is not given: SOURCE/eval, or STORE-eval beside a store.

    A run sampled with truncation psi != 1 gets RUN/eval-psiPSI: its own samples folder, so
    faces of two psi are never mixed and one report never overwrites the other."""
    source = Path(source)
    if (source / MANIFEST).is_file():
        return source.with_name(source.name + "-eval")
    truncated = psi is not None and float(psi) != 1.0 and is_run(source)
    return source / (f"eval-psi{float(psi):g}" if truncated else "eval")


def evaluate(
    source: str | Path,            # folder of images, run directory / exported model, or face store
    ref: str | Path,               # the reference face store
    *,
    split: str | None = None,      # reference split (None: holdout; a store without one is refused)
    metrics=DEFAULT_METRICS,       # names from ALL_METRICS, or "fid,kid"
    n: int | None = None,          # pictures to evaluate (None: all; a run: 10,000 sampled)
    out: str | Path | None = None,  # report folder (None: see default_out)
    batch_size: int = 32,          # Inception batch
    sample_options: dict | None = None,  # sampler options for a run (sampler=, steps=, psi=)
    progress: bool = True,
    command: str | None = None,    # the command line to record (None: sys.argv)
    mem_pool: int | None = None,   # memorization in Inception space: search N training faces spread over the split (None: all)
    allow_overlap: bool = False,   # score a run against reference faces it trained on (refused otherwise; recorded)
) -> dict:
    """Compute the metrics, write metrics.json, report.md and report.html; return the results."""
    from facegen.distributed import is_main, wait
    from facegen.metrics.report import write_report

    # Under `accelerate launch` every process runs this: sampling and Inception features are
    # split across processes and gathered; the main process writes the report (docs/scaling.md).
    progress = progress and is_main()
    metrics = parse_metrics(metrics)
    store = FaceStore(ref)
    split = reference_split(store, split)
    ref_images = store.split(split)
    out = Path(out) if out else default_out(source, (sample_options or {}).get("psi"))
    # refuse before spending an hour sampling
    training = training_faces(Path(source))
    overlap = check_overlap(training, store, split, allow_overlap)
    if is_run(Path(source)):
        check_counts(metrics, n or DEFAULT_RUN_SAMPLES, len(ref_images), split)
    src = open_source(source, n, out, store, split, sample_options or {}, progress)
    warnings = check_counts(metrics, len(src.images), len(ref_images), split) + overlap_warnings(overlap, training)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)

    results: dict = {}
    pictures = {"samples": sample_grid(src.images, store.resolution)}
    gen_features = ref_features = None
    if {"fid", "kid", "pr", "dc", "mem"} & set(metrics):
        from facegen.metrics.inception import folder_features, store_features

        # both sides cached: a rerun on the same samples (or store) extracts no features
        gen_features = (store_features(src.store, src.split, len(src.images), batch_size, progress) if src.store
                        else folder_features(src.images, batch_size, progress))
        ref_features = store_features(store, split, len(ref_images), batch_size, progress)
        results |= distribution_metrics(metrics, gen_features, ref_features)
    if "mem" in metrics:
        results["memorization"], pictures["closest_pairs"] = memorization(src, gen_features, training, store, batch_size,
                                                                          progress, mem_pool)
    if "faces" in metrics:
        results["faces"], pictures["face_checks"] = face_checks(src.images, store, split, progress)

    report = {
        "facegen_report": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(sys.argv),
        "source": {"kind": src.kind, "path": str(src.path), "name": src.name, "count": len(src.images),
                   **({"store_hash": src.store.content_hash, "split": src.split,
                       "rows": "evenly spaced over the split" if src.spread else "all"} if src.store else {}),
                   **({"samples": src.record} if src.record else {})},
        "reference": {"store": str(store.path), "content_hash": store.content_hash, "split": split,
                      "count": len(ref_images), "resolution": store.resolution, "overlap": overlap},
        "feature_network": feature_network(),
        "versions": versions(),
        "metrics": results,
        "warnings": warnings,
    }
    if is_main():
        write_report(out, report, pictures)
    wait()
    report["out"] = str(out)
    return report


def reference_split(store: FaceStore, split: str | None) -> str:
    """The split named, or the store's holdout. A store without a holdout is refused unless a
    split is named: its train split may be the very faces a model trained on."""
    if split:
        store.split(split)  # a missing split is refused in one line
        return split
    if "holdout" in store.splits:
        return "holdout"
    raise FacegenError(f"{store.path} has no holdout split (it has {', '.join(store.splits)}), and a model may have trained "
                       "on its other faces; prepare it with --holdout N, or name the split to score against, e.g. --split train")


def open_source(source, n, out: Path, ref_store: FaceStore, ref_split: str, sample_options: dict, progress: bool) -> Source:
    """Which kind of input this is, and its pictures (a run is sampled here)."""
    from facegen.metrics.images import ImageFolder
    from facegen.sample import read_record

    path = Path(source)
    if not path.exists():
        raise FacegenError(f"{path}: no such folder; pass a folder of images, a run directory or a face store")
    if n is not None and n < 1:
        raise FacegenError(f"--n {n}: pass a positive number of pictures")
    if (path / MANIFEST).is_file():
        store = FaceStore(path)
        # real vs real: the train split, unless that is exactly the reference itself
        split = "train" if (store.content_hash, "train") != (ref_store.content_hash, ref_split) else "holdout"
        if split not in store.splits:
            raise FacegenError(f"{path} is the reference split itself and has no holdout split to compare with it; "
                               "prepare it with --holdout N, or pass another store or folder")
        spread = bool(n) and n < len(store.split(split))
        return Source("store", path, path.name, store.subset(split, n), store, split, spread)
    if is_run(path):
        from facegen.sample import EXPORT_META, sample_on_processes

        count = n or DEFAULT_RUN_SAMPLES
        folder = out / "samples"
        # OUT/samples is evaluation's own: faces of another model or settings are sampled again
        sample_on_processes(path, range(count), folder, show_progress=progress, replace=True, **sample_options)
        name = path.parent.name if (path / EXPORT_META).is_file() and path.name == "model" else path.name
        psi = float(sample_options.get("psi") or 1.0)
        if psi != 1.0:
            name += f"-psi{psi:g}"  # `facegen compare` groups by name: truncated faces are another model's row
        return Source("run", path, name, ImageFolder(folder, limit=count), record=read_record(folder))
    return Source("folder", path, path.name, ImageFolder(path, limit=n), record=read_record(path))


def is_run(path: Path) -> bool:
    """A run directory or an exported model folder (what `facegen sample` accepts)."""
    from facegen.sample import EXPORT_META

    return (path / EXPORT_META).is_file() or (path / "model" / EXPORT_META).is_file()


# ---- the reference against the run's training faces -------------------------------------------


def training_faces(source: Path) -> TrainingFaces:
    """The store a run trained on: `data:` of RUN/config.yaml, for a run folder or its model/."""
    import yaml

    from facegen.sample import EXPORT_META

    if not is_run(source):
        kind = "a face store" if (source / MANIFEST).is_file() else "a folder of pictures"
        return TrainingFaces(None, None, None, f"{kind}, whose model's training faces are unknown")
    run = source.parent if (source / EXPORT_META).is_file() and source.name == "model" else source
    config = run / "config.yaml"
    recorded = (yaml.safe_load(config.read_text()) or {}).get("data") if config.is_file() else None
    if not recorded:
        return TrainingFaces(run, None, None, f"no training store recorded in {config}")
    if not Path(recorded).is_dir():  # as recorded: relative to the folder training ran in
        return TrainingFaces(run, str(recorded), None, "training store not found")
    return TrainingFaces(run, str(recorded), FaceStore(recorded))


def check_overlap(training: TrainingFaces, ref_store: FaceStore, split: str, allow: bool) -> dict:
    """How many reference faces the run trained on, for metrics.json; refused unless `allow`."""
    if training.store is None:
        return {"checked": False, "note": training.note, **({"training_store": training.recorded} if training.recorded else {})}
    train, reference = training.store, ref_store.split(split)
    record = {"checked": True, "training_store": training.recorded, "training_hash": train.content_hash,
              "training_count": len(train.split("train")), "of": len(reference), "allowed": allow}
    if train.content_hash == ref_store.content_hash:
        # the run's own store: its other splits were chosen apart from train when it was prepared
        found = len(reference) if split == "train" else 0
        method = "same store: the train split itself" if split == "train" else f"same store: its {split} split is disjoint from train"
    elif train.resolution != ref_store.resolution:
        return record | {"checked": False, "note": f"the reference is {ref_store.resolution} px and the training store "
                                                   f"{train.resolution} px: pixel hashes cannot compare them: overlap not checked"}
    else:
        found, method = faces_in_training(reference, train), "pixel hashes (blake2b of each face's bytes)"
    if found and not allow:
        raise FacegenError(overlap_message(found, len(reference), ref_store, split, training))
    return record | {"in_training": found, "method": method}


def overlap_message(found: int, total: int, ref_store: FaceStore, split: str, training: TrainingFaces) -> str:
    """One line: how many reference faces the run trained on, and where a clean holdout comes from."""
    train = training.store
    if "holdout" in train.splits:  # (its holdout is never the reference here: that overlaps nothing)
        fix = f"score against the training store's own holdout, faces the run never saw: --ref {train.path}"
    else:
        fix = (f"{train.path} has no holdout, so the run saw all of its faces: prepare the store again from the same "
               "photos and --seed with --holdout N, train on it and evaluate with --ref on that store")
    return (f"{found} of the {total} reference faces ({split!r} of {ref_store.path}) are faces run {training.run} trained on "
            f"(the train split of {train.path}), which flatters every score; {fix}; or pass --allow-overlap to score anyway "
            "(recorded in metrics.json)")


def overlap_warnings(overlap: dict, training: TrainingFaces) -> list[str]:
    """The report's warnings about the overlap check: an allowed overlap, or a run not checked."""
    if overlap.get("in_training"):
        return [f"{overlap['in_training']} of the {overlap['of']} reference faces are faces the run trained on "
                f"(allowed with --allow-overlap): its scores are flattered"]
    if training.run is not None and not overlap["checked"]:
        return [overlap["note"]]
    return []


def faces_in_training(reference, training: FaceStore) -> int:
    """How many reference faces (repeats counted) are, byte for byte, in the training split.

    The training split's per-face hashes are cached per store (16 bytes a face); only the
    reference's faces are held as a set."""
    from facegen.metrics.cache import cached_array

    key = {"store": training.content_hash, "split": "train", "hash": "blake2b-128 of each face's bytes"}
    trained = {digest.tobytes() for digest in cached_array("row-hashes", key, lambda: face_hashes(training.split("train")))}
    return sum(digest.tobytes() in trained for digest in face_hashes(reference))


def face_hashes(faces) -> np.ndarray:
    """(n, 16) uint8: blake2b-128 of each face's bytes, HASH_CHUNK_ROWS faces read at a time."""
    out = np.empty((len(faces), 16), np.uint8)
    for start in range(0, len(faces), HASH_CHUNK_ROWS):
        chunk = np.ascontiguousarray(faces[start:start + HASH_CHUNK_ROWS])
        for i, face in enumerate(chunk.reshape(len(chunk), -1)):
            out[start + i] = np.frombuffer(hashlib.blake2b(face.data, digest_size=16).digest(), np.uint8)
    return out


# ---- the metrics ------------------------------------------------------------------------------


def check_counts(metrics, n_generated: int, n_reference: int, split: str) -> list[str]:
    """Refuse FID below FID_MIN_SAMPLES (either set); warn below FID_WARN_SAMPLES."""
    if "fid" not in metrics:
        return []
    smallest = min(n_generated, n_reference)
    if smallest < FID_MIN_SAMPLES:
        which = (f"{n_generated} generated pictures" if n_generated <= n_reference
                 else f"the reference split {split!r} has {n_reference} pictures (prepare the store with a larger --holdout)")
        raise FacegenError(f"FID needs at least {FID_MIN_SAMPLES:,} pictures per set but {which}; "
                           "use KID instead (--metrics kid,pr,dc,mem,faces), which is unbiased at small counts")
    if smallest < FID_WARN_SAMPLES:
        return [f"FID on {smallest:,} pictures is biased upward (use >= {FID_WARN_SAMPLES:,}); compare only with FIDs at the same count"]
    return []


def distribution_metrics(metrics, gen: np.ndarray, ref: np.ndarray) -> dict:
    """FID (+ bootstrap interval), KID, precision/recall, density/coverage through the metric
    registry, each entry with its counts and protocol."""
    from facegen.metrics.registry import measure

    names = [name for name in ("fid", "kid", "pr", "dc") if name in metrics]
    return measure(names, gen, ref, fid={"bootstrap_rounds": FID_BOOTSTRAP_ROUNDS})


def memorization(src: Source, gen_features, training: TrainingFaces, ref_store: FaceStore, batch_size: int,
                 progress: bool, mem_pool: int | None) -> tuple[dict, bytes]:
    """The audit over the faces the run trained on when its store is known, else over the
    reference store's train split (a folder's model is unknown); the record says which."""
    from facegen.metrics.audit import memorization_audit

    if training.store is not None:
        searched, of = training.store, "the faces the run trained on"
    elif training.run is not None:
        searched, of = ref_store, f"the reference store ({training.missing})"
    else:
        searched, of = ref_store, "the reference store's train split"
    audit, picture = memorization_audit(src.images, gen_features, searched, batch_size, progress, IDENTITY_MAX_GENERATED,
                                        IDENTITY_MAX_TRAIN, PIXEL_SIDE, inception_max_train=mem_pool)
    audit["searched"] = {"store": str(searched.path), "content_hash": searched.content_hash, "split": "train",
                         "count": len(searched.split("train")), "of": of}
    return audit, picture


def face_checks(images, store: FaceStore, split: str, progress: bool) -> tuple[dict, bytes]:
    """Face-check summary of up to FACES_MAX generated pictures against as many reference
    faces, each set's pictures spread over all of it."""
    from facegen.metrics.cache import cached_array

    reference = store.subset(split, FACES_MAX)
    generated = check_array_with_bar(images, subset_rows(len(images), FACES_MAX), progress, "face checks")
    key = {"store": store.content_hash, "split": split, "count": len(reference), "check": "facegen.data.align.check_faces/hog",
           **({"rows": "spread"} if len(reference) < len(store.split(split)) else {})}
    checks = cached_array("faces", key, lambda: check_array_with_bar(reference, range(len(reference)), progress, "reference faces"))
    return face_report(generated, checks)


def face_report(generated: np.ndarray, reference: np.ndarray) -> tuple[dict, bytes]:
    """Summary and histogram picture of two sets of face checks. A set where no face was found
    is legitimate (noise, tiny pictures): its empty density histogram divides 0 by 0, which
    numpy would print as a RuntimeWarning on the terminal; the summary records None instead."""
    from facegen.metrics.faces import face_plot, face_summary

    with np.errstate(divide="ignore", invalid="ignore"):
        return face_summary(generated, reference), face_plot(generated, reference)


def check_array_with_bar(images, rows, progress: bool, label: str) -> np.ndarray:
    """Face checks of the pictures at `rows`, 32 at a time under a progress bar."""
    from facegen.metrics.faces import check_array
    from facegen.progress import counting_bar

    checks = []
    with counting_bar(label, len(rows), enabled=progress) as advance:
        for start in range(0, len(rows), 32):
            block = rows[start:start + 32]
            checks.append(check_array([images[i] for i in block]))
            advance(len(block))
    return np.concatenate(checks) if checks else np.zeros((0, 6))


def sample_grid(images, side: int, count: int = 64) -> bytes:
    """PNG of the first `count` pictures at the reference resolution."""
    from facegen.metrics.images import resized
    from facegen.metrics.report import png_bytes
    from facegen.utils import make_grid

    return png_bytes(make_grid(resized(images, side, range(min(count, len(images)))), nrow=8))


def feature_network() -> dict:
    from facegen.metrics.inception import NETWORK_FILE, network_hash, resize_mode

    return {"name": "Inception-v3 (TF 2015-12-05, FID pool3)", "file": NETWORK_FILE, "sha256": network_hash(),
            "input": "(x - 128) / 128, x the float 299x299 resize in [0, 255], NCHW", "resize": resize_mode()}


def versions() -> dict:
    import platform

    import dlib
    import scipy
    import torch

    import facegen

    return {"facegen": getattr(facegen, "__version__", "unknown"), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__, "dlib": dlib.__version__}
