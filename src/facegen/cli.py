"""The `facegen` command. Each command parses its options, then calls one library function.

User mistakes raise FacegenError; `main` prints them as one line and exits with status 2, as it
does with the mistakes click finds while parsing (an option out of its range, a missing option).
Heavy imports (torch, diffusers) happen inside the commands so `facegen --help` is fast.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from facegen.utils import FacegenError

app = typer.Typer(
    name="facegen",
    help="Train, sample, evaluate and serve realistic face generators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # subcommands inherit it
)
data_app = typer.Typer(help="Prepare and inspect face stores.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        import facegen

        typer.echo(f"facegen {facegen.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Train, sample, evaluate and serve realistic face generators."""


def _out_folder(out: Path, option: str = "--out") -> Path:
    """A folder to write into, checked before any work: refuse in one line a path that is a file
    or lies under one (mkdir would fail with a traceback, perhaps after an hour of sampling)."""
    if out.exists() and not out.is_dir():
        raise FacegenError(f"{option} {out} is a file, not a folder; give a folder path (or move the file away)")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise FacegenError(f"{option} {out}: {parent} is a file, not a folder; give a folder path")
            break
    return out


def _check_sampling(run: Optional[Path], sampler: Optional[str], steps: Optional[int]) -> None:
    """--sampler/--steps against the exported model's family, from its facegen.json (no weights
    loaded): refused in one line before any progress bar. Also refuses a run without model/."""
    from facegen.config import samplers
    from facegen.sample import EXPORT_META, model_dir

    folder = model_dir(run)  # a run without model/: how to export it
    if sampler is None and steps is None:
        return
    meta = json.loads((folder / EXPORT_META).read_text())
    family, objective = meta.get("family"), meta.get("objective", "ddpm")
    known = samplers(family, objective)
    if known is None:
        given = " and ".join(flag for flag, value in (("--sampler", sampler), ("--steps", steps)) if value is not None)
        raise FacegenError(f"{given}: a {family} model makes a face in one pass, with no sampler or steps; drop {given}")
    if sampler is not None and sampler not in known:
        from facegen.families.diffusion.samplers import SAMPLERS

        if sampler not in SAMPLERS:
            raise FacegenError(f"--sampler {sampler}: unknown sampler {sampler!r} for this {family} model; choose one of {', '.join(known)}")
        raise FacegenError(f"--sampler {sampler}: this {family} model (objective {objective}) takes one of {', '.join(known)}")


def _check_mixing(run: Optional[Path]) -> None:
    """--mix-seed needs a generator with a mapping network: refused in one line before any weights load."""
    from facegen.sample import EXPORT_META, model_dir

    meta = json.loads((model_dir(run) / EXPORT_META).read_text())
    if meta.get("family") != "gan" or meta.get("generator", {}).get("arch") != "style":
        raise FacegenError(f"--mix-seed: style mixing needs a GAN with a mapping network (model.g_arch=style); "
                           f"this is a {meta.get('family')} model; drop --mix-seed")


def _psi(value: float) -> float:
    """--truncation is checked while the command line is parsed, before a model loads."""
    from facegen.sample import check_psi

    try:
        return check_psi(value)
    except FacegenError as e:
        raise typer.BadParameter(str(e)) from None


# The sampling options of `sample`, `eval`, `sweep` and `serve`, declared once: each command
# names its parameter with one of these types (the GAN-only --truncation: sample and eval; serve's
# default psi: DefaultTruncation).
Sampler = Annotated[Optional[str], typer.Option("--sampler", help="Diffusion sampler: ddim, dpm++, unipc, ddpm, pndm or euler-a (objective ddpm); heun, edm-dpm++ or edm-euler (objective edm); default: the model's.")]
Steps = Annotated[Optional[int], typer.Option("--steps", min=1, max=10000, help="Sampling steps per face (fewer = faster); default: the model's.")]
Truncation = Annotated[float, typer.Option("--truncation", metavar="PSI", callback=_psi, help="GAN: 0 < PSI <= 1 (1 = off). A style G pulls w toward its tracked average, w' = w_avg + PSI (w - w_avg); others scale z (weaker). Fewer odd faces, less variety; the same seed stays the same face.")]
# serve's --truncation: the psi of requests that name none (the page's own control sets the rest)
DefaultTruncation = Annotated[Optional[float], typer.Option("--truncation", metavar="PSI", callback=lambda v: v if v is None else _psi(v),
                                                            help="GAN: the psi of requests that name none, and where the page's slider starts; default: the model's recommended psi (facegen.json), else 1.")]
GuidanceScale = Annotated[Optional[float], typer.Option("--guidance-scale", min=0.0, help="Stable Diffusion: classifier-free guidance weight (1 = none); default: the model's (7.5).")]
Prompt = Annotated[Optional[str], typer.Option("--prompt", help="Stable Diffusion: the prompt; default: the training prompt.")]
NegativePrompt = Annotated[Optional[str], typer.Option("--negative-prompt", help="Stable Diffusion: what guidance steers away from, e.g. \"tilted, cropped\"; default: the model's (empty).")]


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
    src: list[str] = typer.Argument(..., help="Folder of photos (searched recursively), .zip/.tar/.tar.gz archive, CelebA layout (img_align_celeba/ + list_eval_partition.txt) or hf:NAME[:SPLIT]; several are merged into one store."),
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
    shards: int = typer.Option(1, min=1, help="Write the store as N shards, so that each of N processes (or a divisor of N) reads only its own (docs/scaling.md)."),
) -> None:
    """Turn face photos into a training-ready face store (uint8 array + manifest.json).

    Bad files (corrupt, not an image, too small, exact duplicates) are skipped and listed
    with their reason in the manifest. The store appears only when complete; memory stays
    bounded whatever the number of photos. Interrupted (Ctrl-C, a kill), the same command
    continues where it stopped.

    Examples:

        facegen data prepare ../shared/data/celeba-10k --out stores/celeba64 --size 64 --holdout 1000

        facegen data prepare photos.zip --out stores/mine --size 128 --crop align --all-faces

        facegen data prepare ../shared/data/celeba-10k ../shared/data/utkface --out stores/faces64 --size 64 --crop align --holdout 5000

        facegen data prepare hf:nielsr/CelebA-faces --out stores/hf64 --size 64 --limit 5000
    """
    from facegen.data.prepare import prepare

    crop_options = {"all_faces": True} if all_faces else {}
    crop_options.update({k: v for k, v in (("zoom", zoom), ("detector", detector and detector.value)) if v is not None})
    prepare(src, out, size, crop=crop.value, holdout=holdout, limit=limit, seed=seed, allow_upscale=allow_upscale,
            overwrite=overwrite, workers=workers, crop_options=crop_options, shards=shards)


@data_app.command("info")
def data_info(
    store: Path = typer.Argument(..., help="Face store folder written by `facegen data prepare`."),
    sheet: Optional[Path] = typer.Option(None, help="Contact sheet PNG to write; default STORE/contact-sheet.png, or STORE-contact-sheet.png beside a read-only store."),
    faces: int = typer.Option(64, min=1, max=1024, help="Random faces on the contact sheet."),
    seed: int = typer.Option(0, help="Chooses the faces on the sheet."),
    eyes: int = typer.Option(500, min=0, help="Random faces run through the face check to print how well eye centres agree (0: skip)."),
) -> None:
    """Summarise a face store (source, crop, splits, skipped files) and write a contact sheet.

    Examples:

        facegen data info stores/celeba64

        facegen data info stores/celeba64 --sheet celeba64.png --faces 100
    """
    from facegen.data.info import store_info

    store_info(store, sheet=sheet, faces=faces, seed=seed)
    if eyes:
        from facegen.data.align import print_eye_spread

        print_eye_spread(store, faces=eyes, seed=seed)


# ---- train (issue: training loop) ------------------------------------------------------


def _presets_epilog() -> str:
    from facegen.config import preset_names

    return "Presets: " + ", ".join(preset_names()) + " (src/facegen/configs/)."


@app.command("train", context_settings={"allow_interspersed_args": True}, epilog=_presets_epilog())
def train_command(
    preset: str = typer.Argument(..., help="Preset name (e.g. ddpm-tiny32; the list is below) or a YAML config file."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Config overrides as key=value (YAML values), e.g. lr=2e-4 model.layers_per_block=1."),
    data: Path = typer.Option(..., "--data", help="Face store folder written by `facegen data prepare`."),
    out: Path = typer.Option(..., "--out", help="Run folder: config, checkpoints, samples, logs, model/."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Total optimizer steps (overrides the preset's; with --resume: train up to this)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint, exactly where it stopped."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    autoencoder: Optional[Path] = typer.Option(None, "--autoencoder", help="Latent diffusion (ldm-* presets): the trained autoencoder run (an ae-* run) whose latents it learns; same as model.autoencoder=PATH."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Stable Diffusion (sd-* presets): a StableDiffusionPipeline folder or hub id, e.g. CompVis/stable-diffusion-v1-4; same as model.pretrained=PATH."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Stable Diffusion (sd-* presets): the one training prompt; same as model.prompt=TEXT."),
) -> None:
    """Train a face generator on a face store; writes RUN/model/ (diffusers format) at the end.

    Ctrl-C finishes the current step, saves a checkpoint and stops; --resume continues it.

    Examples:

        facegen train ddpm-tiny32 --data stores/celeba32 --out runs/tiny32 --steps 3000

        facegen train ddpm-tiny32 --data stores/celeba32 --out runs/tiny32 --resume --steps 6000

        facegen train my.yaml --data stores/celeba64 --out runs/x lr=2e-4 model.block_out_channels=[64,128,128]

        facegen train ddpm-celeba64 --data stores/celeba64 --out runs/c64 --dry-run

        facegen train ae-tiny64 --data stores/utk64 --out runs/ae64 && facegen train ldm-tiny64 --data stores/utk64 --out runs/ldm64 --autoencoder runs/ae64

        facegen train sd-finetune-celeba --data stores/celeba512 --out runs/sd --pretrained CompVis/stable-diffusion-v1-4 --prompt "A high-resolution photo of a face"

    Several GPUs or machines: the same command after a launcher (batch_size stays the global
    batch; docs/scaling.md has multi-node configs):

        accelerate launch --multi_gpu --num_processes 8 -m facegen.cli train ddpm-celeba64 --data stores/celeba64 --out runs/c64
    """
    from facegen.distributed import is_main
    from facegen.train import resolved_yaml, train

    _out_folder(out)
    # Local paths are recorded absolute, so that --resume and sampling work from any directory.
    if pretrained and Path(pretrained).exists():
        pretrained = str(Path(pretrained).resolve())
    overrides = [*(overrides or []), *([f"model.autoencoder={autoencoder.resolve()}"] if autoencoder else [])]
    # json.dumps quotes the text, so YAML reads it back as this exact string (colons included).
    overrides += [f"model.{key}={json.dumps(value)}" for key, value in (("pretrained", pretrained), ("prompt", prompt)) if value is not None]
    cfg = train(preset, data, out, overrides=overrides, steps=steps, resume=resume, dry_run=dry_run)
    if dry_run:
        typer.echo(resolved_yaml(cfg), nl=False)
    elif is_main():  # under a launcher, once
        if cfg["family"] == "ae":  # a first stage: it reconstructs, it does not generate
            second_stage = "ldm-" + preset.removeprefix("ae-") if preset.startswith("ae-") else "ldm-PRESET"
            typer.echo(f"done: {out / 'model'} (reconstruction metrics in {out / 'model' / 'reconstruction.json'}; "
                       f"train the second stage with `facegen train {second_stage} --data {data} --out RUN --autoencoder {out}`)")
        else:
            typer.echo(f"done: {out / 'model'} (sample it with `facegen sample {out} --n 16 --out {out}/faces`)")



# ---- export ----------------------------------------------------------------------------


@app.command("export")
def export_command(
    run: Path = typer.Argument(..., help="Run folder written by `facegen train` (with checkpoints/)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", metavar="step-N", help="Which checkpoint of RUN/checkpoints/; default: the latest."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing RUN/model/."),
) -> None:
    """Write RUN/model/ from a checkpoint's EMA weights, as the end of training would.

    For a run stopped before its last step (Ctrl-C, a kill, a time limit of the machine):
    sampling, evaluation and serving need RUN/model/. `--resume` would train on instead.

    Examples:

        facegen export runs/tiny32

        facegen export runs/tiny32 --checkpoint step-004000 --overwrite
    """
    from facegen.export import export_checkpoint

    result = export_checkpoint(run, checkpoint, overwrite=overwrite)
    typer.echo(f"exported {result['checkpoint'].name} (step {result['step']}) -> {result['model']} "
               f"(sample it with `facegen sample {run} --n 16 --out {run}/faces`)")


# ---- sample ----------------------------------------------------------------------------


@app.command("sample")
def sample_command(
    run: Optional[Path] = typer.Argument(None, help="Run folder (or its model/ folder) of a finished training; omitted = the embedded default model."),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="Number of images: seeds START .. START+N-1."),
    out: Path = typer.Option(..., "--out", help="Folder for seedNNNNNN.png files (existing files are kept and skipped)."),
    sampler: Sampler = None,
    steps: Steps = None,
    seed: int = typer.Option(0, "--seed", min=0, help="First seed (with --n)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", metavar="LIST", help="Explicit seeds instead of --n/--seed: integers and ranges that include both ends, e.g. 0-99,500 (101 faces)."),
    batch: int = typer.Option(16, "--batch", min=1, help="Images per forward pass (changes an image by one grey level at most; a folder is resumed only with the same --batch)."),
    guidance_scale: GuidanceScale = None,
    prompt: Prompt = None,
    negative_prompt: NegativePrompt = None,
    truncation: Truncation = 1.0,
    mix_seed: Optional[int] = typer.Option(None, "--mix-seed", min=0, help="Style GAN (g_arch style): take the fine styles (layers from the middle on) from this seed's w: style mixing."),
) -> None:
    """Generate faces by seed into a folder; the same seed always gives the same face.

    A rerun skips images that exist, so a killed job continues where it stopped.

    Examples:

        facegen sample --n 8 --out faces            # the embedded default model

        facegen sample runs/tiny32 --n 16 --out faces --sampler dpm++ --steps 20

        facegen sample runs/tiny32 --seeds 0-999 --out faces --sampler ddim --steps 50 --batch 64

        facegen sample runs/sd --n 2900 --out faces --steps 50 --guidance-scale 7.5 --negative-prompt "tilted, cropped"

        facegen sample runs/gan64 --n 2500 --out faces/gan64-psi0.85 --truncation 0.85

        facegen sample runs/stylegan32 --n 8 --out faces/mixed --truncation 0.7 --mix-seed 42
    """
    from facegen.distributed import is_main
    from facegen.sample import sample_on_processes
    from facegen.utils import parse_seeds

    if (n is None) == (seeds is None):
        raise FacegenError("give either --n N (seeds --seed .. --seed+N-1) or --seeds LIST, e.g. --n 16 or --seeds 0-15")
    seed_list = parse_seeds(seeds) if seeds is not None else list(range(seed, seed + n))
    if not seed_list:
        raise FacegenError(f"--seeds {seeds!r} names no seed; give integers or ranges, e.g. --seeds 0-15")
    _out_folder(out)
    _check_sampling(run, sampler, steps)
    if mix_seed is not None:
        _check_mixing(run)
    options = {k: v for k, v in (("sampler", sampler), ("steps", steps), ("guidance_scale", guidance_scale), ("prompt", prompt),
                                 ("negative_prompt", negative_prompt), ("psi", truncation), ("mix_seed", mix_seed)) if v is not None}
    # Under `accelerate launch` the seeds are split across the processes (docs/scaling.md).
    result = sample_on_processes(run, seed_list, out, batch_size=batch, **options)
    if is_main():
        typer.echo(f"{result['written']} written, {result['skipped']} already there, {result['images_per_second']:.2f} img/s -> {out}")



# ---- eval / compare --------------------------------------------------------------------


@app.command("eval")
def eval_command(
    source: Path = typer.Argument(..., help="Folder of images, run directory / exported model (sampled first), or a face store."),
    ref: Path = typer.Option(..., "--ref", help="Reference face store (from `facegen data prepare`)."),
    split: Optional[str] = typer.Option(None, "--split", help="Reference split; default: holdout (a store without one needs --split named)."),
    metrics: str = typer.Option("fid,kid,pr,dc,mem,faces", "--metrics", help="Comma list of fid,kid,pr,dc,mem,faces."),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="Pictures to evaluate; default: all in a folder/store, 10,000 sampled from a run."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder; default: SOURCE/eval (STORE-eval beside a store)."),
    sampler: Sampler = None,
    steps: Steps = None,
    batch: int = typer.Option(32, "--batch", min=1, max=1024, help="Inception batch size (does not change the figures)."),
    mem_pool: Optional[int] = typer.Option(None, "--mem-pool", min=2, help="Memorization in Inception space: search only N training faces spread over the split (recorded in the report); default: the whole train split."),
    allow_overlap: bool = typer.Option(False, "--allow-overlap", help="Score a run against reference faces it trained on (refused otherwise; recorded in metrics.json)."),
    guidance_scale: GuidanceScale = None,
    prompt: Prompt = None,
    negative_prompt: NegativePrompt = None,
    truncation: Truncation = 1.0,
) -> None:
    """Score generated faces against a face store: FID, KID, precision/recall, density/coverage,
    a memorization audit and face checks. Writes metrics.json, report.md and report.html.

    FID is refused below 2,048 pictures per set (use KID) and warned about below 10,000.
    When SOURCE is a run, it is sampled first with the sampling options (--sampler, --steps,
    --truncation, ...); with --truncation PSI != 1 the default report folder is SOURCE/eval-psiPSI.
    A run's training store (RUN/config.yaml) is checked against the reference: reference
    faces it trained on are refused unless --allow-overlap, and the memorization audit
    searches those training faces.

    Examples:

        facegen eval runs/tiny32 --ref stores/celeba32 --n 10000

        facegen eval faces/ --ref stores/celeba64 --metrics kid,pr,dc,mem --out reports/faces

        facegen eval stores/utk64 --ref stores/celeba64 --split train --metrics kid,pr,dc

        facegen eval runs/gan64 --ref stores/celeba64 --n 10000 --truncation 0.85
    """
    import shlex

    from facegen.evaluate import default_out, evaluate, is_run
    from facegen.sample import is_unexported_run, no_export_message

    for folder in (source, source.parent) if source.name == "model" else (source,):  # RUN, or RUN/model
        if is_unexported_run(folder):  # not a folder of pictures: its loss.png is no face
            raise FacegenError(no_export_message(folder))
    _out_folder(out or default_out(source, truncation))
    if is_run(source):
        _check_sampling(source, sampler, steps)
    options = {k: v for k, v in (("sampler", sampler), ("steps", steps), ("guidance_scale", guidance_scale), ("prompt", prompt),
                                 ("negative_prompt", negative_prompt), ("psi", truncation)) if v is not None}
    result = evaluate(source, ref, split=split, metrics=metrics, n=n, out=out, batch_size=batch,
                      sample_options=options, command=shlex.join(["facegen", *sys.argv[1:]]), mem_pool=mem_pool,
                      allow_overlap=allow_overlap)
    for line in _eval_lines(result):
        typer.echo(line)
    typer.echo(f"report: {result['out']}/report.html")


def _eval_lines(result: dict) -> list[str]:
    """`facegen eval`'s summary: one figure per row, all written alike (4 decimals); a figure that
    could not be measured on these pictures is left out, with one line saying why."""
    def number(value) -> bool:
        return value is not None and not math.isnan(value)  # None and NaN: not measured

    overlap = result["reference"]["overlap"]
    said = (f"{overlap['in_training']} of its {overlap['of']} faces among the run's training faces"
            if overlap["checked"] else overlap["note"])
    rows, skipped = [], []
    m = result["metrics"]
    resolution = result["reference"].get("resolution")
    px = f" at {resolution} px" if resolution else ""  # dlib's detector finds few faces in small pictures
    for name, entry in m.items():
        if isinstance(entry, dict) and "value" in entry:
            if number(entry["value"]):
                rows.append((name, entry["value"], f"{entry['n_generated']} generated / {entry['n_reference']} reference"))
            else:
                skipped.append(f"{name}: no figure on {entry['n_generated']} generated / {entry['n_reference']} reference pictures")
    if "memorization" in m:
        mem = m["memorization"]
        for space in ("inception", "pixels"):
            if number(mem.get(space, {}).get("copy_share")):
                rows.append((f"copies {space}", mem[space]["copy_share"], "share of samples"))
        ident = mem.get("identity", {})
        if number(ident.get("uniqueness")):
            # dlib finds few faces in small pictures: say on how many samples the share stands
            rows.append(("uniqueness", ident["uniqueness"], f"identity: share of the {ident.get('faces_generated', 0)} of "
                                                            f"{ident.get('n_generated', 0)} samples with a face found{px}"))
        else:
            skipped.append(f"identity uniqueness: faces found in {ident.get('faces_generated', 0)} of "
                           f"{ident.get('n_generated', 0)} generated and {ident.get('faces_train', 0)} of "
                           f"{ident.get('n_train', 0)} training pictures{px} (needs 1 and 2)")
    if "faces" in m:
        g, r = m["faces"]["generated"], m["faces"]["reference"]
        rows.append(("one face", g["one_face_share"], f"share of generated; reference {r['one_face_share']:.4f}"))
        roll = m["faces"]["wasserstein1"].get("roll_deg")
        if number(roll):
            rows.append(("roll W1", roll, "degrees, generated vs reference"))
        else:
            skipped.append(f"roll W1: a face found in {1 - g['no_face_share']:.4f} of generated and "
                           f"{1 - r['no_face_share']:.4f} of reference pictures{px} (needs faces on both sides)")
    width = max([12, *(len(name) for name, _, _ in rows)])
    lines = [f"{'reference':<{width}} {said}"]
    lines += [f"{name:<{width}} {value:10.4f}  ({note})" for name, value, note in rows]
    lines += [f"{'not measured':<{width}} {why}" for why in skipped]
    return lines


@app.command("compare")
def compare_command(
    reports: List[Path] = typer.Argument(..., help="Run directories (RUN/eval) or report folders with metrics.json."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the table as markdown to this file."),
) -> None:
    """Results table over runs: mean +/- std over seeds per metric, like a paper's table.

    Runs are grouped by name without a leading run number and a trailing -seedN suffix
    (00003-ddpm64-seed1 -> ddpm64), and by model and sampling settings: two evaluations of
    one run with another --sampler, --steps or --truncation are two rows. The table is cut
    to the terminal's width (short headers, explained below it). Figures computed with another protocol than the rest of
    their column (feature network, resize, reference set or split, sample counts, k or
    subsets) are never averaged with them: each gets its own figure, marked with a numbered
    dagger that the notes below the table explain.

    Examples:

        facegen compare runs/ddpm64-seed0 runs/ddpm64-seed1 runs/dcgan-seed0 runs/dcgan-seed1 --out table.md
    """
    from facegen.metrics.compare import compare

    compare(reports, out=out)



# ---- sweep (issue 8: Stable Diffusion) -------------------------------------------------


@app.command("sweep")
def sweep_command(
    run: Path = typer.Argument(..., help="Run folder (or its model/ folder) of a model with classifier-free guidance (Stable Diffusion)."),
    ref: Path = typer.Option(..., "--ref", help="Reference face store (its holdout split if it has one, else train)."),
    scales: str = typer.Option("1.5,3,5,7.5,10", "--scales", help="Guidance scales to try, comma-separated."),
    n: int = typer.Option(10_000, "--n", min=1, help="Faces per scale (seeds 0..n-1 at every scale); FID needs >= 2048."),
    out: Optional[Path] = typer.Option(None, "--out", help="Sweep folder (default RUN/sweep): a report per scale, sweep.md, sweep.json."),
    metrics: str = typer.Option("fid,kid", "--metrics", help="Metrics per scale, as in `facegen eval` (fid,kid,pr,dc,mem,faces)."),
    steps: Steps = None,
    sampler: Sampler = None,
    prompt: Prompt = None,
    negative_prompt: NegativePrompt = None,
    split: Optional[str] = typer.Option(None, "--split", help="Reference split; default: holdout if present, else train."),
    batch: int = typer.Option(32, "--batch", min=1, help="Inception batch."),
) -> None:
    """Sample and score a model at several guidance scales; print FID/KID per scale.

    Resumable: each scale's faces are kept, so a rerun only makes what is missing.

    Examples:

        facegen sweep runs/sd-aligned --ref stores/celeba512-aligned --scales 1.5,3,5,7.5 --n 10000

        facegen sweep runs/sd --ref stores/celeba512 --metrics kid --n 1000 --steps 25
    """
    from facegen.sweep import sweep, to_markdown

    if out is not None:
        _out_folder(out)
    options = {k: v for k, v in (("steps", steps), ("sampler", sampler), ("prompt", prompt), ("negative_prompt", negative_prompt)) if v is not None}
    table = sweep(run, ref, scales, n=n, out=out, metrics=metrics, split=split, sample_options=options, batch_size=batch)
    typer.echo(to_markdown(table), nl=False)
    typer.echo(f"table: {table['out']}/sweep.md")


# ---- project (issue 28) ----------------------------------------------------------------


@app.command("project")
def project_command(
    run: Path = typer.Argument(..., help="Run folder (or its model/) of a style GAN (model.g_arch=style)."),
    photo: Path = typer.Argument(..., help="Photo of one face (JPEG, PNG, ...): found and aligned as `data prepare --crop align` aligns faces."),
    out: Path = typer.Option(..., "--out", help="Folder to write: target.png, projected.png, w.npy, noise.npz, strip.png, morph.png/gif, projection.json."),
    steps: int = typer.Option(200, "--steps", min=1, max=100_000, help="Optimisation steps (StyleGAN2's projector uses 1000)."),
    per_layer: bool = typer.Option(False, "--per-layer", help="Optimise one w per layer (W+, w.npy of shape (num_ws, w_dim)): a closer fit, less like G's own faces."),
    seed: int = typer.Option(0, "--seed", min=0, help="The random face the morph walks to; also seeds the optimisation's noise."),
    distance: str = typer.Option("pixels+inception", "--distance", help="pixels+inception: pixel MSE + FID Inception features; lpips: LPIPS-VGG when installed with its weights (else pixels+inception, with a note); pixels: MSE alone."),
    aligned: bool = typer.Option(False, "--aligned", help="PHOTO is already an aligned square face (e.g. a store face): no detection; resized to the model's size."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
) -> None:
    """Project a photo into a style GAN: find the w and noise whose face is the photo's face.

    StyleGAN2's projector: w starts at w_avg and is optimised with Adam against the distance,
    with the noise images (kept white noise). The folder shows the aligned photo, the
    projection, a strip of its progress and a morph from it to the face of --seed.

    Examples:

        facegen project runs/stylegan32 me.jpg --out proj/me

        facegen project runs/stylegan32 me.jpg --out proj/me-wplus --per-layer --steps 500

        facegen project runs/stylegan32 face.png --aligned --out proj/face --steps 50 --seed 7
    """
    import shlex

    from facegen.project import project

    _out_folder(out)
    r = project(run, photo, out, steps=steps, per_layer=per_layer, seed=seed, distance=distance, aligned=aligned,
                overwrite=overwrite, command=shlex.join(["facegen", *sys.argv[1:]]))
    first, final = r["log"][0]["distance"], r["final"]
    typer.echo(f"projected: {out / 'projected.png'} ({r['distance']} distance {first:.4f} -> {final['distance']:.4f} over {r['steps']} steps, "
               f"PSNR {final['psnr_db']:.1f} dB, {r['seconds']:.0f} s)")
    typer.echo(f"w:         {out / 'w.npy'} {tuple(r['w_shape'])} ({r['space']})")
    typer.echo(f"morph:     {out / 'morph.gif'} (to seed {seed})")


# ---- serve -----------------------------------------------------------------------------


@app.command("serve")
def serve_command(
    run: Optional[Path] = typer.Argument(None, help="Run folder (or its model/) to serve; omitted = the embedded default model."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; 0.0.0.0 makes the page reachable from other machines."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    steps: Steps = None,
    sampler: Sampler = None,
    max_batch: int = typer.Option(8, "--max-batch", min=1, max=256, help="Most faces generated together in one batch."),
    window_ms: float = typer.Option(10.0, "--window-ms", min=0, max=1000, help="How long a request waits for others to share its batch."),
    queue: int = typer.Option(64, min=1, max=10000, help="Most waiting requests; beyond it the server answers 503 with Retry-After."),
    truncation: DefaultTruncation = None,
) -> None:
    """Serve a web page that shows a new face on every refresh, with a JSON/PNG API.

    Without RUN it serves the embedded default model. Space shows a new face; /?seed=N shows
    face N; /?psi=0.85 shows a GAN's faces truncated.

    API: /face.png?seed=N&psi=P, /morph.gif?from=A&to=B, /info, /healthz.

    Examples:

        facegen serve

        facegen serve runs/tiny32 --steps 25 --sampler ddim

        facegen serve runs/gan64 --host 0.0.0.0 --port 8080 --max-batch 32

        facegen serve runs/stylegan32 --truncation 0.7
    """
    from facegen.serve.server import serve

    if run is None or Path(run).exists():  # a missing folder gets serve's own line
        _check_sampling(run, sampler, steps)
    serve(run, host=host, port=port, steps=steps, sampler=sampler, max_batch=max_batch, window_ms=window_ms, queue_size=queue,
          psi=truncation)


# ---- demo ------------------------------------------------------------------------------


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for the grid, the samples and report.html."),
    n: int = typer.Option(200, "--n", min=16, max=100_000, help="Samples to generate and evaluate."),
    model: Optional[Path] = typer.Option(None, "--model", help="A run or model folder instead of the embedded default."),
) -> None:
    """Faces from the embedded default model, a small evaluation and an HTML report.

    Needs no dataset and no download: the default model and the Inception features of its
    held-out reference faces ship inside the package.

    Examples:

        facegen demo

        facegen demo --out demo-out --n 500
    """
    from facegen.demo import run_demo

    _out_folder(out)
    r = run_demo(out, n_eval=n, model=model)
    f, d = r["faces"], r.get("distribution")
    typer.echo(f"model:    {r['model']} ({r['info'].get('family')}, {r['info'].get('resolution')} px)")
    typer.echo(f"faces:    {out / 'faces.png'}  (grid of the first 64 seeds)")
    typer.echo(f"samples:  {out / 'samples'}/  ({r['n_samples']} PNGs, {r['sampling']['images_per_second']:.1f} img/s)")
    typer.echo(f"checks:   one face found in {f['one_face_share']:.1%} of {f['n']} samples (dlib HOG)")
    if d:
        typer.echo(f"metrics:  KID {d['kid']:.4f} +/- {d['kid_std']:.4f}, precision {d['precision']:.3f}, recall {d['recall']:.3f} "
                   f"({d['n_generated']} generated vs {d['n_reference']} held-out real faces; indicative only)")
    typer.echo(f"report:   {out / 'report.html'}")


EXAMPLE_WIDTH = 74  # an example line and its 4-space indent inside rich's 78 columns of an 80-column terminal


def _reflow(doc: str) -> str:
    """A command's docstring as its --help text: prose paragraphs joined into one line each, so
    that rich wraps them at the terminal's width instead of at our source's line breaks;
    indented lines (examples) stay lines, a long one continued with ` \\` on lines indented
    4 more, so that it reads and pastes as one command instead of wrapping to column 0."""
    paragraphs = []
    for paragraph in doc.split("\n\n"):
        lines = paragraph.split("\n")
        if any(line.startswith(" ") for line in lines):
            paragraphs.append("\n".join(_continued(line) for line in lines))
        else:
            paragraphs.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(paragraphs)


def _continued(line: str) -> str:
    """One example line cut between its words (a quoted string is one word, an option and its
    value stay together) into lines of EXAMPLE_WIDTH."""
    indent = line[:len(line) - len(line.lstrip())]
    if len(line) - len(indent) <= EXAMPLE_WIDTH:
        return line
    words = []
    for word in re.findall(r'(?:"[^"]*"|\'[^\']*\'|\S)+', line):
        if words and words[-1].startswith("--") and " " not in words[-1] and not word.startswith("-"):
            words[-1] += " " + word  # an option stays with its value
        else:
            words.append(word)
    out, current = [], ""
    for word in words:
        width = EXAMPLE_WIDTH - (4 if out else 0) - 2  # room for " \\"
        if current and len(current) + 1 + len(word) > width:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    out.append(current)
    return " \\\n".join(indent + ("    " if k else "") + part for k, part in enumerate(out))


for _info in [*app.registered_commands, *data_app.registered_commands]:
    _info.help = _reflow(inspect.getdoc(_info.callback))


def _allowed(param) -> str:
    """'from 1 to 65535' for an option with a range (typer keeps it on the option, click on its type)."""
    ranged = param if hasattr(param, "min") else getattr(param, "type", None)
    low, high = getattr(ranged, "min", None), getattr(ranged, "max", None)
    if low is not None and high is not None:
        return f"from {low:g} to {high:g}"
    return f"at least {low:g}" if low is not None else f"at most {high:g}" if high is not None else ""


def main() -> None:
    """The `facegen` command: every user mistake, ours or one click finds while parsing (an option
    out of its range, a missing option, an unknown command), is one line `error: ...` and status 2."""
    # click's exceptions, wherever this typer takes click from (its own copy, typer._click, or click)
    clicks = sys.modules[typer.BadParameter.__module__]
    no_args = getattr(clicks, "NoArgsIsHelpError", ())  # click >= 8.2
    try:
        code = app(standalone_mode=False)  # click's errors come here instead of its boxed usage text
    except FacegenError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except no_args:  # `facegen` alone: the help is printed already
        sys.exit(2)
    except clicks.ClickException as e:
        ctx = getattr(e, "ctx", None)
        hint = [_allowed(getattr(e, "param", None))] + ([f"see `{ctx.command_path} -h`"] if ctx is not None else [])
        hint = "; ".join(h for h in hint if h)
        print(f"error: {e.format_message()}" + (f" ({hint})" if hint else ""), file=sys.stderr)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort, getattr(clicks, "Abort", typer.Abort)):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    if isinstance(code, int) and code:  # typer.Exit(code), or typer's own Ctrl-C (130)
        sys.exit(code)


if __name__ == "__main__":
    main()
