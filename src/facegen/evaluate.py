"""`facegen eval`: score generated faces against a face store and write a report.

    evaluate("runs/ddpm64", ref="stores/celeba64", n=10_000, out="runs/ddpm64/eval")

The input is a folder of images, a run directory or exported model (sampled first, seeds
0..n-1, into OUT/samples), or a second face store (real vs real: its train split). The
reference is the store's holdout split when it has one, else train; the memorization
audit always searches the train split, the faces a model could have copied.
"""

from __future__ import annotations

import datetime
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegen.data.store import MANIFEST, FaceStore, spread_rows
from facegen.utils import FacegenError

ALL_METRICS = ("fid", "kid", "pr", "dc", "is", "mem", "faces")
DEFAULT_METRICS = ("fid", "kid", "pr", "dc", "mem", "faces")
FID_MIN_SAMPLES = 2048      # below this the 2048-d covariance is singular: FID refused
FID_WARN_SAMPLES = 10_000   # below this FID is noticeably biased upward: warned
FID_BOOTSTRAP_ROUNDS = 50   # resamples of both sets for the FID interval (~6 CPU-s each at 10,000 / 5,000)
DEFAULT_RUN_SAMPLES = 10_000
PIXEL_SIDE = 32             # memorization in pixel space: colour pictures at 32x32
FACES_MAX = 1000            # face checks on at most this many pictures per set (dlib, ~0.1 s each)
IDENTITY_MAX_GENERATED = 500
IDENTITY_MAX_TRAIN = 2000   # identity search pool: the first 2,000 training faces (cached)


@dataclass
class Source:
    kind: str          # "folder", "run" or "store"
    path: Path
    name: str          # the run/folder/store name, used by `facegen compare` to group
    images: object     # sequence of uint8 (H, W, 3)
    store: FaceStore | None = None
    split: str | None = None
    spread: bool = False   # a store's rows: evenly spaced over the split (True) or its first rows
    record: dict | None = None  # a sample folder's provenance record (facegen.sample.PROVENANCE)


def parse_metrics(text: str | tuple | list) -> tuple[str, ...]:
    names = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    unknown = [m for m in names if m not in ALL_METRICS]
    if unknown or not names:
        raise FacegenError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(ALL_METRICS)}")
    if "is" in names:
        raise FacegenError("Inception Score is unavailable: the bundled FID network (default_1.pt) outputs pool "
                           "features only, no classifier logits; drop `is` from --metrics")
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
    split: str | None = None,      # reference split (None: holdout if present, else train)
    metrics=DEFAULT_METRICS,       # names from ALL_METRICS, or "fid,kid"
    n: int | None = None,          # pictures to evaluate (None: all; a run: 10,000 sampled)
    out: str | Path | None = None,  # report folder (None: see default_out)
    batch_size: int = 32,          # Inception batch
    sample_options: dict | None = None,  # sampler options for a run (sampler=, steps=, psi=)
    progress: bool = True,
    command: str | None = None,    # the command line to record (None: sys.argv)
    mem_pool: int | None = None,   # memorization in Inception space: search the first N training faces (None: all)
) -> dict:
    """Compute the metrics, write metrics.json, report.md and report.html; return the results."""
    from facegen.distributed import is_main, wait
    from facegen.metrics.report import write_report

    # Under `accelerate launch` every process runs this: sampling and Inception features are
    # split across processes and gathered; the main process writes the report (docs/scaling.md).
    progress = progress and is_main()
    metrics = parse_metrics(metrics)
    store = FaceStore(ref)
    split = split or ("holdout" if "holdout" in store.splits else "train")
    ref_images = store.split(split)
    out = Path(out) if out else default_out(source, (sample_options or {}).get("psi"))
    if is_run(Path(source)):  # refuse before spending an hour sampling
        check_counts(metrics, n or DEFAULT_RUN_SAMPLES, len(ref_images), split)
    src = open_source(source, n, out, store, split, sample_options or {}, progress)
    warnings = check_counts(metrics, len(src.images), len(ref_images), split)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)

    results: dict = {}
    pictures = {"samples": sample_grid(src.images, store.resolution)}
    gen_features = ref_features = None
    if {"fid", "kid", "pr", "dc", "mem"} & set(metrics):
        from facegen.metrics.inception import folder_features, store_features

        # both sides cached: a rerun on the same samples (or store) extracts no features
        gen_features = (store_features(src.store, src.split, len(src.images), batch_size, progress, spread=src.spread) if src.store
                        else folder_features(src.images, batch_size, progress))
        ref_features = store_features(store, split, len(ref_images), batch_size, progress)
        results |= distribution_metrics(metrics, gen_features, ref_features)
    if "mem" in metrics:
        from facegen.metrics.audit import memorization_audit

        results["memorization"], pictures["closest_pairs"] = memorization_audit(
            src.images, gen_features, store, batch_size, progress, IDENTITY_MAX_GENERATED, IDENTITY_MAX_TRAIN, PIXEL_SIDE,
            inception_max_train=mem_pool)
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
                      "count": len(ref_images), "resolution": store.resolution},
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
        images = store.split(split)
        # Fewer than all: rows evenly spaced over the split, not its first n, since a store is in
        # file-name order and a merged store's first rows all come from its first source.
        spread = bool(n) and n < len(images)
        return Source("store", path, path.name, images[spread_rows(len(images), n)] if spread else images, store, split, spread)
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


def check_counts(metrics, n_generated: int, n_reference: int, split: str) -> list[str]:
    """Refuse FID below FID_MIN_SAMPLES (either set); warn below FID_WARN_SAMPLES."""
    if "fid" not in metrics:
        return []
    smallest = min(n_generated, n_reference)
    if smallest < FID_MIN_SAMPLES:
        which = (f"{n_generated} generated pictures" if n_generated <= n_reference
                 else f"the reference split {split!r} has {n_reference} pictures (a larger split: --split train)")
        raise FacegenError(f"FID needs at least {FID_MIN_SAMPLES:,} pictures per set but {which}; "
                           "use KID instead (--metrics kid,pr,dc,mem,faces), which is unbiased at small counts")
    if smallest < FID_WARN_SAMPLES:
        return [f"FID on {smallest:,} pictures is biased upward (use >= {FID_WARN_SAMPLES:,}); compare only with FIDs at the same count"]
    return []


def distribution_metrics(metrics, gen: np.ndarray, ref: np.ndarray) -> dict:
    """FID (+ bootstrap interval), KID, precision/recall, density/coverage, each with its counts."""
    from facegen.metrics.fid import fid_bootstrap
    from facegen.metrics.kid import kernel_distance, subset_size
    from facegen.metrics.prdc import density_coverage, precision_recall

    counts = {"n_generated": int(len(gen)), "n_reference": int(len(ref))}
    out = {}
    if "fid" in metrics:
        b = fid_bootstrap(gen, ref, rounds=FID_BOOTSTRAP_ROUNDS, level=0.95)
        # ci95 and bootstrap_rounds keep their pre-issue-18 names; the method says what changed
        out["fid"] = {"value": b["value"], "ci95": b["ci"], "bootstrap_rounds": b["rounds"], "bootstrap_se": b["se"],
                      "bootstrap_resampled_mean": b["resampled_mean"], "bootstrap_resampled": ["generated", "reference"],
                      "ci_method": b["method"], **counts}
    if "kid" in metrics:
        subset = subset_size(len(gen), len(ref), 1000)
        mean, std = kernel_distance(gen, ref, subsets=100, max_subset_size=1000)
        out["kid"] = {"value": mean, "std": std, "subsets": 100, "subset_size": subset, **counts}
    if {"pr", "dc"} & set(metrics):
        # k-NN radii shrink as a set grows, so both sets enter at the same count (Kynkaanniemi
        # et al. and Naeem et al. compare equal-size sets): the larger one is subsampled, seeded.
        gen_eq, ref_eq, equal = equal_count_subsets(gen, ref)
        if "pr" in metrics:
            precision, recall = precision_recall(ref_eq, gen_eq, k=3)
            out["precision"] = {"value": precision, "k": 3, **counts, **equal}
            out["recall"] = {"value": recall, "k": 3, **counts, **equal}
        if "dc" in metrics:
            density, coverage = density_coverage(ref_eq, gen_eq, k=5)
            out["density"] = {"value": density, "k": 5, **counts, **equal}
            out["coverage"] = {"value": coverage, "k": 5, **counts, **equal}
    return out


EQUAL_COUNT_SEED = 0


def equal_count_subsets(gen: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Both feature sets cut to the smaller count (a seeded random subset of the larger, kept in
    order), and what was done, for metrics.json."""
    n = min(len(gen), len(ref))
    rng = np.random.default_rng(EQUAL_COUNT_SEED)
    pick = lambda x: x if len(x) == n else x[np.sort(rng.choice(len(x), n, replace=False))]  # noqa: E731
    return pick(gen), pick(ref), {"n_compared_each": int(n), "subsample_seed": EQUAL_COUNT_SEED}


def face_checks(images, store: FaceStore, split: str, progress: bool) -> tuple[dict, bytes]:
    """Face-check summary of up to FACES_MAX generated pictures against the reference split."""
    from facegen.metrics.cache import cached_array
    from facegen.metrics.faces import face_plot, face_summary

    ref_count = min(FACES_MAX, len(store.split(split)))
    generated = check_array_with_bar(images, min(FACES_MAX, len(images)), progress, "face checks")
    key = {"store": store.content_hash, "split": split, "count": ref_count, "check": "facegen.data.align.check_faces/hog"}
    reference = cached_array("faces", key, lambda: check_array_with_bar(store.split(split), ref_count, progress, "reference faces"))
    return face_summary(generated, reference), face_plot(generated, reference)


def check_array_with_bar(images, count: int, progress: bool, label: str) -> np.ndarray:
    """Face checks of the first `count` pictures, 32 at a time under a progress bar."""
    from facegen.metrics.faces import check_array
    from facegen.progress import counting_bar

    rows = []
    with counting_bar(label, count, enabled=progress) as advance:
        for start in range(0, count, 32):
            stop = min(start + 32, count)
            rows.append(check_array([images[i] for i in range(start, stop)]))
            advance(stop - start)
    return np.concatenate(rows) if rows else np.zeros((0, 6))


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
