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
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from facegen.utils import FacegenError, atomic_write_json, save_png, to_uint8

EXPORT_META = "facegen.json"
# A folder of faces sampled with truncation carries this note of its psi (see check_folder_psi).
# A dot file: ImageFolder and `ls` of the faces skip it.
TRUNCATION_NOTE = ".facegen-truncation.json"
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
    if not path.exists():
        raise FacegenError(f"{path}: no such run or model folder")
    raise FacegenError(f"{path}: no exported model ({EXPORT_META} not found in it or in {path / 'model'}); finish training, or export a checkpoint first")


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
        raise FacegenError(f"truncation psi {psi:g} is out of range: use 0 < psi <= 1 (1 = no truncation, 0.7 = a common choice)")
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


def check_folder_psi(out_dir: Path, psi: float) -> None:
    """One folder, one psi. A rerun skips the faces that exist, so without this check a
    truncated rerun into an untruncated folder (or the other way round) would mix the two
    silently, and an evaluation of the folder would score neither. A folder sampled with
    psi != 1 carries TRUNCATION_NOTE, written before its first face; faces without the note
    were sampled at psi = 1."""
    out_dir = Path(out_dir)
    note = out_dir / TRUNCATION_NOTE
    if any(out_dir.glob("seed*.png")):
        have = float(json.loads(note.read_text())["psi"]) if note.is_file() else 1.0
        if have != psi:
            raise FacegenError(f"{out_dir} holds faces sampled at truncation psi {have:g}, not {psi:g}; "
                               "sample into another folder (--out) so the two are not mixed")
    elif psi != 1.0:
        atomic_write_json(note, {"psi": psi})   # a new or empty folder takes this psi
    else:
        note.unlink(missing_ok=True)            # left by a run that stopped before its first face


def sample_to_folder(path_or_generator, seeds: Iterable[int], out_dir: str | Path, batch_size: int = 16,
                     shard: tuple[int, int] = (0, 1), show_progress: bool = True, **options: Any) -> dict:
    """Write seedNNNNNN.png for each seed (this shard's share), skipping files that exist.

    Returns {"written": n, "skipped": n, "seconds": s, "images_per_second": r}. Files are
    written atomically, so a killed job leaves no half image and a rerun finishes the rest.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from facegen.progress import progress

    generator = load_generator(path_or_generator) if path_or_generator is None or isinstance(path_or_generator, (str, Path)) else path_or_generator
    psi = decode_options(generator, options).get("psi", 1.0)  # a bad psi is refused before the folder is touched
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_folder_psi(out_dir, psi)
    mine = shard_seeds(list(seeds), shard)
    todo = [s for s in mine if not seed_file(out_dir, s).exists()]
    start = time.perf_counter()
    columns = [TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]} img/s"), TimeRemainingColumn()]
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
