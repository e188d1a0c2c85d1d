"""One sampling path for everything: the CLI, in-training grids, evaluation and the web page (STYLE G9).

    gen = load_generator("runs/ddpm-tiny32")           # RUN or RUN/model
    images = generate(gen, range(16), batch_size=8, sampler="dpm++", steps=20)  # uint8 (16, H, W, 3)
    sample_to_folder("runs/ddpm-tiny32", range(1000), "out/", sampler="ddim", steps=50)

Image k depends only on seed k: the generator draws each seed's noise from its own
torch.Generator, so batch size and sharding never change a face. `shard=(rank, world)`
splits a seed list across processes (process r takes seeds r, r+W, r+2W, ...).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from facegen.utils import FacegenError, save_png, to_uint8

EXPORT_META = "facegen.json"
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


def generate(generator, seeds: Iterable[int], batch_size: int = 16, progress=None, **options: Any) -> np.ndarray:
    """uint8 images (N, H, W, 3), one per seed, in seed order. `progress(n_done)` is called per batch."""
    import torch

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


def sample_to_folder(path_or_generator, seeds: Iterable[int], out_dir: str | Path, batch_size: int = 16,
                     shard: tuple[int, int] = (0, 1), show_progress: bool = True, **options: Any) -> dict:
    """Write seedNNNNNN.png for each seed (this shard's share), skipping files that exist.

    Returns {"written": n, "skipped": n, "seconds": s, "images_per_second": r}. Files are
    written atomically, so a killed job leaves no half image and a rerun finishes the rest.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from facegen.progress import progress

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mine = shard_seeds(list(seeds), shard)
    todo = [s for s in mine if not seed_file(out_dir, s).exists()]
    generator = load_generator(path_or_generator) if path_or_generator is None or isinstance(path_or_generator, (str, Path)) else path_or_generator
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
