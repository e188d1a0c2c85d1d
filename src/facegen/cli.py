"""The `facegen` command. Each command parses its options, then calls one library function.

User mistakes raise FacegenError; `main` prints them as one line and exits with status 2.
Heavy imports (torch, diffusers) happen inside the commands so `facegen --help` is fast.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from facegen.utils import FacegenError

app = typer.Typer(
    name="facegen",
    help="Train, sample, evaluate and serve realistic face generators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Prepare and inspect face stores.", no_args_is_help=True)
app.add_typer(data_app, name="data")


# ---- data (issue: foundation) ----------------------------------------------------------


class Crop(str, Enum):
    celeba = "celeba"
    center = "center"
    align = "align"


class Detector(str, Enum):
    hog = "hog"
    cnn = "cnn"
    haar = "haar"


@data_app.command("prepare")
def data_prepare(
    src: str = typer.Argument(..., help="Folder of photos (searched recursively), .zip/.tar/.tar.gz archive, CelebA layout (img_align_celeba/ + list_eval_partition.txt) or hf:NAME[:SPLIT]."),
    out: Path = typer.Option(..., "--out", help="Face store folder to write."),
    size: int = typer.Option(..., "--size", min=8, max=4096, help="Side of the square faces in pixels (64, 128, 256...)."),
    crop: Crop = typer.Option(Crop.celeba, help="celeba: CelebA's standard square (cut 20/218 top and bottom); center: largest centred square; align: detect and align faces FFHQ-style."),
    holdout: int = typer.Option(0, min=0, help="Faces kept apart as the evaluation / memorization reference (chosen by --seed)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N files of SRC (sorted by name), for quick trials."),
    seed: int = typer.Option(0, help="Chooses the holdout faces."),
    allow_upscale: bool = typer.Option(False, "--allow-upscale", help="Enlarge crops smaller than --size instead of skipping them."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store at --out."),
    workers: Optional[int] = typer.Option(None, min=1, help="Decoding processes; default: every core."),
    all_faces: bool = typer.Option(False, "--all-faces", help="--crop align: every face of a group photo, not only the largest."),
    zoom: Optional[float] = typer.Option(None, min=0.25, max=4.0, help="--crop align: > 1 frames faces tighter, < 1 looser (1 = FFHQ framing)."),
    detector: Optional[Detector] = typer.Option(None, help="--crop align: face detector (default hog)."),
) -> None:
    """Turn face photos into a training-ready face store (uint8 array + manifest.json).

    Bad files (corrupt, not an image, too small, exact duplicates) are skipped and listed
    with their reason in the manifest. The store appears only when complete.

    Examples:

        facegen data prepare ../shared/data/celeba-10k --out stores/celeba64 --size 64 --holdout 1000

        facegen data prepare photos.zip --out stores/mine --size 128 --crop align --all-faces

        facegen data prepare hf:nielsr/CelebA-faces --out stores/hf64 --size 64 --limit 5000
    """
    from facegen.data.prepare import prepare

    crop_options = {"all_faces": True} if all_faces else {}
    crop_options.update({k: v for k, v in (("zoom", zoom), ("detector", detector and detector.value)) if v is not None})
    prepare(src, out, size, crop=crop.value, holdout=holdout, limit=limit, seed=seed, allow_upscale=allow_upscale,
            overwrite=overwrite, workers=workers, crop_options=crop_options)


@data_app.command("info")
def data_info(
    store: Path = typer.Argument(..., help="Face store folder written by `facegen data prepare`."),
    sheet: Optional[Path] = typer.Option(None, help="Contact sheet PNG to write; default STORE/contact-sheet.png, or STORE-contact-sheet.png beside a read-only store."),
    faces: int = typer.Option(64, min=1, max=1024, help="Random faces on the contact sheet."),
    seed: int = typer.Option(0, help="Chooses the faces on the sheet."),
) -> None:
    """Summarise a face store (source, crop, splits, skipped files) and write a contact sheet.

    Examples:

        facegen data info stores/celeba64

        facegen data info stores/celeba64 --sheet celeba64.png --faces 100
    """
    from facegen.data.info import store_info

    store_info(store, sheet=sheet, faces=faces, seed=seed)


# ---- train (issue: training loop) ------------------------------------------------------


# ---- sample ----------------------------------------------------------------------------


# ---- eval / compare --------------------------------------------------------------------


# ---- serve -----------------------------------------------------------------------------


@app.command("serve")
def serve_command(
    run: Optional[Path] = typer.Argument(None, help="Run folder (or its model/) to serve; omitted = the embedded default model."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; 0.0.0.0 makes the page reachable from other machines."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    steps: Optional[int] = typer.Option(None, min=1, max=1000, help="Sampler steps per face (fewer = faster); default: the model's."),
    sampler: Optional[str] = typer.Option(None, help="Diffusion sampler (ddpm, ddim, dpm++, unipc); default: the model's."),
    max_batch: int = typer.Option(8, "--max-batch", min=1, max=256, help="Most faces generated together in one batch."),
    window_ms: float = typer.Option(10.0, "--window-ms", min=0, max=1000, help="How long a request waits for others to share its batch."),
    queue: int = typer.Option(64, min=1, max=10000, help="Most waiting requests; beyond it the server answers 503 with Retry-After."),
) -> None:
    """Serve a web page that shows a new face on every refresh, with a JSON/PNG API.

    Examples:
      facegen serve                          # the embedded default model on http://127.0.0.1:8000/
      facegen serve runs/00003-ddpm --steps 25 --sampler ddim
      facegen serve runs/00004-gan --host 0.0.0.0 --port 8080 --max-batch 32
    """
    from facegen.serve.server import serve

    serve(run, host=host, port=port, steps=steps, sampler=sampler, max_batch=max_batch, window_ms=window_ms, queue_size=queue)


# ---- demo ------------------------------------------------------------------------------


def main() -> None:
    try:
        app()
    except FacegenError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
