"""One sampling path for everything: the CLI, in-training grids, evaluation and the web page (STYLE G9).

    gen = load_generator("runs/ddpm-tiny32")           # RUN or RUN/model
    images = generate(gen, range(16), batch_size=8, sampler="dpm++", steps=20)  # uint8 (16, H, W, 3)
    sample_to_folder("runs/ddpm-tiny32", range(1000), "out/", sampler="ddim", steps=50)

Image k depends only on seed k: the generator draws each seed's noise from its own
torch.Generator, so batch size and sharding never change a face. `shard=(rank, world)`
splits a seed list across processes (process r takes seeds r, r+W, r+2W, ...).

`psi` is the truncation option (0 < psi <= 1; 1 = off), accepted by every entry point but
honoured only by generators with `truncation = True` (the GAN); `decode_options` refuses
psi != 1 for the others, and drops psi = 1 so they see exactly the options they saw before.

A folder of samples carries a provenance record (PROVENANCE: the sampling code's version, the
weights' hash, the model, every sampling setting with defaults filled in, the batch size and
the kind of device); its faces are reused only for the very same record (docs/evaluation.md,
"Sample folders").
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from facegen.utils import FacegenError, atomic_write_json, save_png, to_uint8, weights_hash as nets_hash

EXPORT_META = "facegen.json"
# What made the faces of a sample folder (see sample_record). A dot file: ImageFolder and `ls` skip it.
PROVENANCE = ".facegen-samples.json"
OLD_TRUNCATION_NOTE = ".facegen-truncation.json"  # the psi note of folders sampled before the record
# The embedded default model ships inside the package (pyproject's package-data "default/*"):
# `facegen sample`, `facegen serve` and `facegen demo` use it when no run is given.
DEFAULT_MODEL = Path(__file__).resolve().parent / "default"


def model_dir(path_or_run: str | Path | None) -> Path:
    """RUN or RUN/model -> the exported folder that holds facegen.json; None -> the default model."""
    if path_or_run is None:
        if not (DEFAULT_MODEL / EXPORT_META).is_file():
            raise FacegenError(f"no default model is installed at {DEFAULT_MODEL}; pass a trained run, e.g. runs/NAME")
        return DEFAULT_MODEL
    path = Path(path_or_run)
    for candidate in (path, path / "model"):
        if (candidate / EXPORT_META).is_file():
            return candidate
    for run in (path, path.parent) if path.name == "model" else (path,):  # RUN, or RUN/model gone
        if is_unexported_run(run):
            raise FacegenError(no_export_message(run))
    if not path.exists():
        raise FacegenError(f"{path}: no such run or model folder")
    raise FacegenError(f"{path}: no exported model ({EXPORT_META} not found in it or in {path / 'model'}); "
                       f"give a run folder written by `facegen train`, or its model/ folder")


def is_unexported_run(path: str | Path) -> bool:
    """A training run (config.yaml or checkpoints/) whose RUN/model/ was never written: training
    stopped (Ctrl-C, a kill) before its end, or model/ was deleted."""
    path = Path(path)
    is_run = (path / "config.yaml").is_file() or (path / "checkpoints").is_dir()
    return is_run and not (path / "model" / EXPORT_META).is_file() and not (path / EXPORT_META).is_file()


def no_export_message(run: str | Path) -> str:
    """The one line for a run without model/: how to get one (the resume command filled in from
    the run's config.yaml when it can be read)."""
    import yaml

    resume = "facegen train ... --resume"
    try:
        cfg = yaml.safe_load((Path(run) / "config.yaml").read_text())
        if cfg.get("preset") and cfg.get("data"):
            resume = f"facegen train {cfg['preset']} --data {cfg['data']} --out {run} --resume"
    except (OSError, AttributeError, yaml.YAMLError):  # no config.yaml, or not a mapping: the general form
        pass
    return (f"no exported model in {run}; resume training (`{resume}`) "
            f"or export the latest checkpoint with `facegen export {run}`")


def load_generator(path_or_run: str | Path | None = None, device: str | None = None):
    """The Generator of an exported model; the family is read from its facegen.json."""
    import torch

    from facegen.families import get_family

    folder = model_dir(path_or_run)
    meta = json.loads((folder / EXPORT_META).read_text())
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return get_family(meta["family"]).load_generator(folder, device)


def shard_seeds(seeds: Sequence[int], shard: tuple[int, int] = (0, 1)) -> list[int]:
    rank, world = shard
    if not 0 <= rank < world:
        raise FacegenError(f"bad shard {shard}: need 0 <= rank < world")
    return list(seeds)[rank::world]


def check_psi(psi: float) -> float:
    """The truncation psi as a float, or a one-line FacegenError when it is outside (0, 1]."""
    psi = float(psi)
    if not 0.0 < psi <= 1.0:  # also refuses NaN
        raise FacegenError(f"truncation psi {psi:g} is out of range: use 0 < psi <= 1 (1 = no truncation; lower = more typical faces: the default model measures best at 0.85)")
    return psi


def decode_options(generator, options: dict) -> dict:
    """The options to pass to `generator.decode`, with psi checked.

    psi = 1 (or None) is dropped: it is every family's plain sampler, so a family without
    truncation never sees the key and psi = 1 gives the very faces it gave before. psi != 1
    needs a generator that declares `truncation = True`; the others refuse it in one line."""
    rest = {k: v for k, v in options.items() if k != "psi"}
    psi = 1.0 if options.get("psi") is None else check_psi(options["psi"])
    if psi == 1.0:
        return rest
    if not getattr(generator, "truncation", False):
        raise FacegenError(f"truncation (--truncation / psi = {psi:g}) is for GANs: this {generator.family} model has none; leave psi at 1")
    return {**rest, "psi": psi}


def generate(generator, seeds: Iterable[int], batch_size: int = 16, progress=None, **options: Any) -> np.ndarray:
    """uint8 images (N, H, W, 3), one per seed, in seed order. `progress(n_done)` is called per batch."""
    import torch

    options = decode_options(generator, options)
    seeds = [int(s) for s in seeds]
    out = []
    with torch.inference_mode():
        for i in range(0, len(seeds), batch_size):
            chunk = seeds[i : i + batch_size]
            images = generator.decode(generator.initial_noise(chunk), chunk, **options)
            out.append(to_uint8(images))
            if progress:
                progress(len(chunk))
    if not out:
        return np.zeros((0, generator.resolution, generator.resolution, 3), dtype=np.uint8)
    return np.concatenate(out)


def seed_file(out_dir: Path, seed: int) -> Path:
    return Path(out_dir) / f"seed{seed:06d}.png"


def weights_hash(generator) -> str:
    """sha256 of the weights of every net the generator holds (facegen.utils.weights_hash).
    A wrapper that holds a generator (a test's, or a server's) is hashed through it."""
    import torch

    nets = []
    for _, value in sorted(vars(generator).items()):
        if isinstance(value, torch.nn.Module):
            nets.append(value)
        elif hasattr(value, "decode") and hasattr(value, "initial_noise"):
            return weights_hash(value)
    if not nets:
        raise FacegenError(f"{type(generator).__name__} holds no torch nets, so its faces cannot be keyed by its weights")
    return nets_hash(*nets)


def sampling_settings(generator, options: dict) -> dict:
    """Every option a face is made with, each default filled in: the model's sampler and steps
    (info), a family's own defaults (Stable Diffusion's `defaults`) and decode's keyword
    defaults (eta, psi), so `--steps 50` and a model whose default is 50 record alike."""
    info = generator.info()
    settings = {k: info[k] for k in ("sampler", "steps", "guidance_scale", "prompt") if k in info}
    settings |= getattr(generator, "defaults", {})
    for p in inspect.signature(generator.decode).parameters.values():
        if p.name not in ("noise", "seeds") and p.default is not inspect.Parameter.empty and p.default is not None:
            settings.setdefault(p.name, p.default)
    chosen = decode_options(generator, options)
    settings |= {k: v for k, v in chosen.items() if v is not None}
    settings["psi"] = chosen.get("psi", 1.0)
    return dict(sorted(settings.items()))


def sample_record(generator, options: dict, batch_size: int) -> dict:
    """The provenance of a folder's faces: everything that decides the pixels of seed k's face
    (seedNNNNNN.png). Two folders' faces are interchangeable when their records are equal."""
    import facegen

    info = generator.info()
    record = {
        "facegen_samples": 1,
        "files": "seedNNNNNN.png: the face of seed N, which depends on seed N alone",
        "facegen": getattr(facegen, "__version__", "unknown"),  # the sampling code
        "weights_sha256": weights_hash(generator),               # dtype included: float16 weights make other pixels
        # Kernels round differently per batch shape and per kind of device: either can move a
        # pixel by one grey level (docs/training.md, "Sampling"). Which GPU does not matter
        # (cuda:1 is cuda): every process of a launch samples on its own.
        "batch_size": int(batch_size),
        "device": str(info.get("device", "unknown")).split(":")[0],
        "model": {k: info[k] for k in ("family", "resolution") if k in info},
        "settings": sampling_settings(generator, options),
    }
    return json.loads(json.dumps(record, default=str))  # as read back from the file, for comparison


def read_record(out_dir: Path) -> dict | None:
    """A folder's provenance record, or None when it has none (or an unreadable one)."""
    try:
        return json.loads((Path(out_dir) / PROVENANCE).read_text())
    except (OSError, ValueError):
        return None


def folder_conflict(out_dir: Path, record: dict) -> str | None:
    """Why the faces in out_dir are not `record`'s faces, or None when they are (or there are none)."""
    if not any(Path(out_dir).glob("seed*.png")):
        return None
    have = read_record(out_dir)
    if have is None:
        return "no record of the model and settings that made them (sampled by an older facegen, or copied in)"
    if have == record:
        return None
    old, new = _flat(have), _flat(record)
    changed = [k for k in new if old.get(k) != new[k]] + [k for k in old if k not in new]
    return "; ".join(f"{k.removesuffix('_sha256')} {_show(old.get(k))}, not {_show(new.get(k))}" for k in changed)


def _flat(record: dict) -> dict:
    """A record as one level of names (those of "model" and "settings" never clash with the rest)."""
    out = {}
    for key, value in record.items():
        out |= value if isinstance(value, dict) else {key: value}
    return out


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and len(value) == 64:
        return value[:12] + "..."  # a hash
    return str(value)


def _how_to_add(out_dir: Path, record: dict) -> str:
    """The batch size and device to keep to add faces to a folder made with others, or ""."""
    have = read_record(out_dir) or {}
    keep = []
    if have.get("batch_size", record["batch_size"]) != record["batch_size"]:
        keep.append(f"keep --batch {have['batch_size']}")
    if have.get("device", record["device"]) != record["device"]:
        keep.append(f"sample on {have['device']} as they were")
    return f"; to add to them, {' and '.join(keep)}" if keep else ""


def claim_folder(out_dir: Path, record: dict, replace: bool = False) -> None:
    """Make out_dir a folder of `record`'s faces before any is written: keep its faces when
    they are record's, else refuse in one line, or with replace=True delete them to sample
    again (evaluation's own folders). The old record goes first, so an interrupted clean-up
    leaves faces without a record, which are never reused, rather than under a wrong one."""
    out_dir = Path(out_dir)
    why = folder_conflict(out_dir, record)
    if why and not replace:
        raise FacegenError(f"{out_dir} holds faces of another model or settings ({why}); "
                           f"sample into another folder (--out), or delete {out_dir} to start it again{_how_to_add(out_dir, record)}")
    if why:
        print(f"{out_dir}: faces of another model or settings ({why}); sampling them again", file=sys.stderr)
        (out_dir / PROVENANCE).unlink(missing_ok=True)
        for face in out_dir.glob("seed*.png"):
            face.unlink()
    if read_record(out_dir) != record:
        (out_dir / OLD_TRUNCATION_NOTE).unlink(missing_ok=True)
        atomic_write_json(out_dir / PROVENANCE, record)


def sample_to_folder(path_or_generator, seeds: Iterable[int], out_dir: str | Path, batch_size: int = 16,
                     shard: tuple[int, int] = (0, 1), show_progress: bool = True, replace: bool = False, **options: Any) -> dict:
    """Write seedNNNNNN.png for each seed (this shard's share), skipping files that exist.

    Faces already there are reused only when the folder's provenance record is this
    generator's and options' (see claim_folder); otherwise the folder is refused, or with
    replace=True sampled again. Returns {"written": n, "skipped": n, "seconds": s,
    "images_per_second": r}. Files are written atomically, so a killed job leaves no half
    image and a rerun finishes the rest.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from facegen.progress import progress

    generator = load_generator(path_or_generator) if path_or_generator is None or isinstance(path_or_generator, (str, Path)) else path_or_generator
    record = sample_record(generator, options, batch_size)  # a bad psi is refused before the folder is touched
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    claim_folder(out_dir, record, replace)
    mine = shard_seeds(list(seeds), shard)
    todo = [s for s in mine if not seed_file(out_dir, s).exists()]
    start = time.perf_counter()
    columns = [TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]} img/s"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]   # as train's bar: elapsed, then what is left
    with progress(*columns, enabled=show_progress) as bar:
        task = bar.add_task("sample", total=len(todo), rate="-")
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            for seed, image in zip(chunk, generate(generator, chunk, batch_size, **options)):
                save_png(seed_file(out_dir, seed), image)
            done = i + len(chunk)
            bar.update(task, completed=done, rate=f"{done / (time.perf_counter() - start):.2f}")
    seconds = time.perf_counter() - start
    return {"written": len(todo), "skipped": len(mine) - len(todo), "seconds": seconds,
            "images_per_second": len(todo) / seconds if todo and seconds > 0 else 0.0}


def sample_on_processes(run, seeds: Sequence[int], out_dir, batch_size: int = 16, show_progress: bool = True,
                        replace: bool = False, **options: Any) -> dict:
    """sample_to_folder with the work split across the processes of a launcher (facegen.distributed).

    The seeds are cut into batches of `batch_size` consecutive seeds, as one process would
    cut them, and process r takes batches r, r+W, r+2W, ...: every face is computed in the
    same batch, at the same place, as with one process, so the files are bitwise the same
    (a batch of another size may round differently). Every process writes its own
    seedNNNNNN.png files; the counts are summed, and every process returns once all are written.
    The main process checks the folder's provenance (and with `replace` clears stale faces)
    before any process writes to it."""
    from facegen.distributed import device, gather_objects, rank_world, wait

    rank, world = rank_world()
    if world == 1:
        return sample_to_folder(run, seeds, out_dir, batch_size, show_progress=show_progress, replace=replace, **options)
    seeds = list(seeds)
    mine = [s for start in range(rank * batch_size, len(seeds), world * batch_size) for s in seeds[start : start + batch_size]]
    generator = load_generator(run, device=device()) if run is None or isinstance(run, (str, os.PathLike)) else run
    record = sample_record(generator, options, batch_size)
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)
        claim_folder(out_dir, record, replace)
    elif not replace and folder_conflict(out_dir, record):
        claim_folder(out_dir, record)  # raises the main process's one-line refusal here too: none waits at the barrier
    wait()
    result = sample_to_folder(generator, mine, out_dir, batch_size, show_progress=show_progress and rank == 0, **options)
    everyone = gather_objects(result)
    seconds = max(r["seconds"] for r in everyone)
    written = sum(r["written"] for r in everyone)
    return {"written": written, "skipped": sum(r["skipped"] for r in everyone), "seconds": seconds,
            "images_per_second": written / seconds if written and seconds > 0 else 0.0, "processes": world}
