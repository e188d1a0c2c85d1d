"""`facegen project`: a photo projected into a tiny style GAN trained for a few steps (facegen.project),
its outputs, its one-line refusals, StyleGAN2's schedule, and the morph in w of a mapped generator."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import export_tiny_ddpm
from PIL import Image

from facegen import sample
from facegen.project import (
    LR_RAMPDOWN,
    LR_RAMPUP,
    W_NOISE_RAMP,
    learning_rate,
    noise_regularisation,
    w_noise_scale,
)
from facegen.utils import FacegenError, to_uint8

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# stylegan-tiny32 narrowed as tests/test_stylegan.py narrows it: seconds a step on a CPU.
FAST = ["model.g_channels=32", "model.g_min_channels=8", "model.d_channels=8", "model.d_max_channels=32", "model.z_dim=16",
        "model.w_dim=null", "batch_size=8", "log_every=1", "tensorboard=false", "sample_seeds=0-3", "sample_every=100",
        "checkpoint_every=100", "threads=1"]


@pytest.fixture(scope="module")
def style_run(celeba_store32, tmp_path_factory):
    """A stylegan-tiny32 run trained for 3 steps and exported (RUN/model/)."""
    from facegen.train import train

    run = tmp_path_factory.mktemp("runs") / "style32"
    train("stylegan-tiny32", celeba_store32.path, run, FAST, steps=3)
    return run


@pytest.fixture(scope="module")
def style_gen(style_run):
    return sample.load_generator(style_run, "cpu")


@pytest.fixture(scope="module")
def held_out_face(celeba_store32, tmp_path_factory) -> tuple[np.ndarray, str]:
    """A holdout face of the store (never trained on), as a 32x32 PNG: an aligned face of the model's size."""
    face = np.asarray(celeba_store32.split("holdout")[0])
    path = tmp_path_factory.mktemp("photos") / "held-out.png"
    Image.fromarray(face).save(path)
    return face, str(path)


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def one_line_error(result, *needles: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# ---- a projection end to end --------------------------------------------------------------


@pytest.fixture(scope="module")
def projected(style_run, held_out_face, tmp_path_factory):
    """`facegen project RUN face.png --aligned --steps 50 --seed 3` through the CLI's main."""
    import sys

    from facegen.cli import main

    out = tmp_path_factory.mktemp("projections") / "face"
    argv = sys.argv
    sys.argv = ["facegen", "project", str(style_run), held_out_face[1], "--aligned", "--out", str(out), "--steps", "50", "--seed", "3"]
    try:
        main()
    finally:
        sys.argv = argv
    return out


def test_projection_lowers_the_distance_and_writes_every_file(projected, style_gen, held_out_face):
    record = json.loads((projected / "projection.json").read_text())
    assert sorted(p.name for p in projected.iterdir()) == sorted(
        ["target.png", "projected.png", "w.npy", "noise.npz", "strip.png", "morph.png", "morph.gif", "projection.json"])
    # The distance falls from the first logged step (w_avg, fresh noise) to the last (the final face).
    log = record["log"]
    assert log[0]["step"] == 0 and log[-1]["step"] == 50 == record["steps"]
    assert log[-1]["distance"] < 0.9 * log[0]["distance"] and log[-1]["pixel_mse"] < log[0]["pixel_mse"]
    assert record["distance"] == "pixels+inception" and record["space"].startswith("W:") and record["seed"] == 3
    assert record["weights_sha256"] == sample.weights_hash(style_gen) and "facegen project" in record["command"]
    assert 0 < record["final"]["pixel_mse"] < 1 and record["final"]["psnr_db"] == pytest.approx(-10 * np.log10(record["final"]["pixel_mse"]))

    # Shapes: 32 px faces; one w of w_dim; a noise image per synthesis layer.
    G = style_gen.G
    assert np.array_equal(png(projected / "target.png"), held_out_face[0])            # an aligned face of the model's size: as it is
    assert png(projected / "projected.png").shape == (32, 32, 3)
    w = np.load(projected / "w.npy")
    assert w.shape == (G.w_dim,) and w.dtype == np.float32
    noise = np.load(projected / "noise.npz")
    buffers = style_gen.noise_images()
    assert sorted(noise.files) == sorted(buffers) and all(noise[k].shape == buffers[k].shape[2:] for k in buffers)
    assert all(abs(noise[k].std() - 1) < 1e-3 and abs(noise[k].mean()) < 1e-3 for k in buffers)   # renormalised every step
    assert png(projected / "strip.png").shape == (36, 2 + 9 * 34, 3)                  # 8 snapshots and the target, 2 px apart
    assert png(projected / "morph.png").shape == (36, 2 + 8 * 34, 3)
    assert Image.open(projected / "morph.gif").n_frames == 2 * 8 - 2                   # there and back

    # The files reproduce the face: w.npy and noise.npz through G give projected.png.
    g = copy.deepcopy(style_gen.G)
    own = dict(g.named_buffers())
    for name in noise.files:
        own[name].copy_(torch.from_numpy(noise[name]))
    with torch.no_grad():
        again = to_uint8(g.synthesis(torch.from_numpy(w)[None], noise_mode="const"))[0]
    assert np.abs(again.astype(int) - png(projected / "projected.png")).max() <= 1
    # The morph starts at the projection and ends at seed 3's own face.
    morph = png(projected / "morph.png")
    assert np.abs(morph[2:34, 2:34].astype(int) - png(projected / "projected.png")).max() <= 1
    assert np.abs(morph[2:34, -34:-2].astype(int) - sample.generate(style_gen, [3])[0]).max() <= 1


def test_projecting_leaves_the_generator_as_it_was(style_gen, held_out_face):
    from facegen.project import Distance, project_face
    from facegen.utils import from_uint8

    before = {k: v.clone() for k, v in style_gen.G.state_dict().items()}
    target = from_uint8(held_out_face[0][None])
    result = project_face(style_gen, target, Distance("pixels", target), steps=3, seed=1)
    assert result.snapshot_steps == [0, 1, 2, 3] and result.snapshots.shape == (4, 3, 32, 32)
    assert all(torch.equal(v, before[k]) for k, v in style_gen.G.state_dict().items())   # a copy is optimised
    assert not any(b.requires_grad for b in style_gen.G.buffers())
    again = project_face(style_gen, target, Distance("pixels", target), steps=3, seed=1)
    assert torch.equal(again.w, result.w)                                                  # --seed fixes the whole run


def test_per_layer_projects_one_w_per_layer(style_run, style_gen, held_out_face, tmp_path, facegen):
    result = facegen("project", style_run, held_out_face[1], "--aligned", "--out", tmp_path / "p", "--steps", "4", "--per-layer")
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "p" / "w.npy").shape == (style_gen.G.num_ws, style_gen.G.w_dim)
    assert "W+" in json.loads((tmp_path / "p" / "projection.json").read_text())["space"]
    assert "(8, 16)" in result.stdout and "projected.png" in result.stdout


def test_a_photo_is_aligned_as_data_prepare_aligns(style_run, celeba_dir, tmp_path, facegen):
    from facegen.data.align import crop_align
    from facegen.data.decode import decode_rgb

    photo = min(celeba_dir.glob("*.jpg"))
    result = facegen("project", style_run, photo, "--out", tmp_path / "p", "--steps", "2", "--distance", "pixels")
    assert result.returncode == 0, result.stderr
    want = crop_align(decode_rgb(photo.read_bytes()), 32)[0]
    assert np.array_equal(png(tmp_path / "p" / "target.png"), want)
    record = json.loads((tmp_path / "p" / "projection.json").read_text())
    assert record["distance"] == "pixels" and record["aligned"].startswith("FFHQ alignment")
    assert "note: the run trained on --crop celeba faces" in result.stderr   # framed otherwise than the photo: said


def test_the_photo_gets_the_zoom_of_an_aligned_training_store(tmp_path):
    from facegen.project import training_framing

    store, run = tmp_path / "store", tmp_path / "run"
    store.mkdir(), run.mkdir()
    (store / "manifest.json").write_text(json.dumps({"crop": "align", "crop_options": {"zoom": 1.3, "all_faces": True}}))
    (run / "config.yaml").write_text(f"data: {store}\n")
    options, said, caveat = training_framing(run / "model")
    assert options == {"zoom": 1.3} and "zoom 1.3" in said and caveat is None
    assert training_framing(tmp_path / "elsewhere") == ({}, "FFHQ alignment (zoom 1)", None)   # unreadable: FFHQ's framing


def test_lpips_falls_back_to_inception_with_a_note(style_run, held_out_face, tmp_path, facegen, monkeypatch):
    from facegen.families.ae import perceptual

    monkeypatch.setattr(perceptual, "load_lpips", lambda required=False: None)   # as without the package or its VGG weights
    result = facegen("project", style_run, held_out_face[1], "--aligned", "--out", tmp_path / "p", "--steps", "2", "--distance", "lpips")
    assert result.returncode == 0, result.stderr
    assert "note: LPIPS is not available" in result.stderr
    record = json.loads((tmp_path / "p" / "projection.json").read_text())
    assert record["distance"] == "pixels+inception" and record["distance_asked"] == "lpips"


# ---- refusals, one line each ----------------------------------------------------------------


def two_faces(celeba_dir, path) -> str:
    """Two photos side by side on one canvas, twice their size: dlib must find both faces."""
    from facegen.data.landmarks import find_faces

    a, b = (np.asarray(Image.open(p).convert("RGB")) for p in sorted(celeba_dir.glob("*.jpg"))[:2])
    canvas = np.full((max(a.shape[0], b.shape[0]) + 40, a.shape[1] + b.shape[1] + 60, 3), 128, np.uint8)
    canvas[20:20 + a.shape[0], 20:20 + a.shape[1]] = a
    canvas[20:20 + b.shape[0], 40 + a.shape[1]:40 + a.shape[1] + b.shape[1]] = b
    canvas = np.asarray(Image.fromarray(canvas).resize((canvas.shape[1] * 2, canvas.shape[0] * 2), Image.BICUBIC))
    assert len(find_faces(canvas)) == 2
    Image.fromarray(canvas).save(path, quality=95)
    return str(path)


@pytest.mark.parametrize("case, needles", [
    ("text", ["photo.jpg: not an image", "give a photo"]),
    ("grey", ["grey.png: no face found", "--aligned"]),
    ("two", ["two.jpg: 2 faces found", "crop the photo"]),
    ("not square", ["--aligned takes a square aligned face, not 64x32 pixels"]),
])
def test_bad_photos_are_refused_in_one_line(case, needles, style_run, celeba_dir, tmp_path, facegen):
    args = []
    if case == "text":
        photo = tmp_path / "photo.jpg"
        photo.write_text("this is not a photo\n")
    elif case == "grey":
        photo = tmp_path / "grey.png"
        Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(photo)
    elif case == "two":
        photo = two_faces(celeba_dir, tmp_path / "two.jpg")
    else:
        photo, args = tmp_path / "wide.png", ["--aligned"]
        Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(photo)
    result = facegen("project", style_run, photo, "--out", tmp_path / "p", "--steps", "2", *args)
    one_line_error(result, *needles)
    assert not (tmp_path / "p").exists()


def test_models_without_a_mapping_network_are_refused(tmp_path_factory, tiny_gan_model, held_out_face, tmp_path, facegen):
    ddpm = export_tiny_ddpm(tmp_path_factory, "ddim", 2)
    one_line_error(facegen("project", ddpm, held_out_face[1], "--aligned", "--out", tmp_path / "p"),
                   "projection needs a generator with a mapping network (g_arch: style)", "a ddpm model")
    one_line_error(facegen("project", tiny_gan_model, held_out_face[1], "--aligned", "--out", tmp_path / "p"),
                   "projection needs a generator with a mapping network (g_arch: style)", "g_arch dcgan")
    assert not (tmp_path / "p").exists()


def test_other_bad_options_are_refused_in_one_line(style_run, held_out_face, tmp_path, facegen):
    one_line_error(facegen("project", style_run, held_out_face[1], "--out", tmp_path / "p", "--distance", "pixels+d"),
                   "needs the run's discriminator", "pixels+inception")
    one_line_error(facegen("project", style_run, held_out_face[1], "--out", tmp_path / "p", "--distance", "vgg"),
                   "unknown distance")
    one_line_error(facegen("project", style_run, tmp_path / "missing.jpg", "--out", tmp_path / "p"), "missing.jpg: cannot read it")
    (tmp_path / "p").mkdir()
    one_line_error(facegen("project", style_run, held_out_face[1], "--aligned", "--out", tmp_path / "p"), "already exists", "--overwrite")
    (tmp_path / "taken.txt").write_text("my notes")
    one_line_error(facegen("project", style_run, held_out_face[1], "--aligned", "--out", tmp_path / "taken.txt"), "is a file")
    assert (tmp_path / "taken.txt").read_text() == "my notes"


# ---- the schedule and the noise penalty -----------------------------------------------------


def test_stylegan2_projector_schedule():
    assert learning_rate(0.0) == 0.0 and learning_rate(1.0) == 0.0                 # ramps from and back to 0
    assert learning_rate(LR_RAMPUP / 2) == pytest.approx(0.05)                      # half way up the linear ramp
    assert learning_rate(LR_RAMPUP) == learning_rate(0.5) == learning_rate(1 - LR_RAMPDOWN) == pytest.approx(0.1)
    assert learning_rate(1 - LR_RAMPDOWN / 2) == pytest.approx(0.05)                # half way down the cosine
    assert w_noise_scale(0.0, 2.0) == pytest.approx(0.1) and w_noise_scale(W_NOISE_RAMP / 2, 2.0) == pytest.approx(0.025)
    assert w_noise_scale(W_NOISE_RAMP, 2.0) == 0.0 == w_noise_scale(0.9, 2.0)


def test_noise_penalty_is_small_for_white_noise_and_large_for_a_picture():
    torch.manual_seed(0)
    white = [torch.randn(1, 1, r, r) for r in (4, 8, 8, 16, 16, 32, 32)]
    smooth = [torch.nn.functional.interpolate(torch.randn(1, 1, 2, 2), size=(r, r), mode="bilinear") for r in (4, 8, 8, 16, 16, 32, 32)]
    smooth = [(s - s.mean()) / s.std() for s in smooth]
    # White noise: only the sampling error of a mean of r^2 products (largest at 4x4); a picture: ~2 per level.
    assert noise_regularisation(white).item() < 0.05 * noise_regularisation(smooth).item()
    assert noise_regularisation([torch.randn(1, 1, 256, 256)]).item() < 1e-3


# ---- w space: GanGenerator's helpers and the morph ------------------------------------------


def test_w_helpers_of_a_mapped_generator(style_gen, tiny_gan_model):
    w = style_gen.seed_ws([4, 5])
    assert w.shape == (2, style_gen.G.w_dim)
    torch.testing.assert_close(style_gen.decode_ws(w), style_gen.decode(style_gen.initial_noise([4, 5]), [4, 5]), rtol=0, atol=1e-5)
    truncated = style_gen.seed_ws([4], psi=0.5)
    torch.testing.assert_close(truncated[0], style_gen.G.w_avg + 0.5 * (w[0] - style_gen.G.w_avg))
    per_layer = w[:1, None].expand(-1, style_gen.G.num_ws, -1)
    torch.testing.assert_close(style_gen.decode_ws(per_layer), style_gen.decode_ws(w[:1]), rtol=0, atol=1e-6)
    assert len(style_gen.noise_images()) == style_gen.G.num_ws - 1          # one per conv; the toRGBs have none
    dcgan = sample.load_generator(tiny_gan_model, "cpu")
    with pytest.raises(FacegenError, match="needs a generator with a mapping network"):
        dcgan.decode_ws(w)


@pytest.mark.parametrize("psi", [1.0, 0.5])
def test_the_morph_of_a_style_generator_walks_a_straight_line_in_w(style_gen, psi):
    from facegen.serve.morph import morph_frames

    frames = morph_frames(style_gen, 21, 22, 5, psi=psi)
    ends = sample.generate(style_gen, [21, 22], psi=psi).astype(int)
    assert np.abs(frames[0].astype(int) - ends[0]).max() <= 1 and np.abs(frames[-1].astype(int) - ends[1]).max() <= 1
    w = style_gen.seed_ws([21, 22], psi=psi)                                 # truncated as decode truncates
    for k, t in enumerate(np.linspace(0, 1, 5)):
        want = to_uint8(style_gen.decode_ws(torch.lerp(w[0], w[1], float(t))[None]))[0]
        assert np.abs(frames[k].astype(int) - want).max() <= 1
    # Not the z slerp the other families walk (the middle frames differ).
    from facegen.utils import slerp

    z = style_gen.initial_noise([21, 22])
    z_walk = to_uint8(style_gen.decode(slerp(z[0], z[1], torch.linspace(0, 1, 5)), psi=psi))
    assert not np.array_equal(z_walk[1:-1], frames[1:-1])


def test_projection_audit_of_held_out_faces(style_run, style_gen, celeba_store32, tmp_path):
    """scripts/projection_audit.py (issue 28's 16-face audit) on 2 faces and 6 random samples: its
    PSNRs are those of the files it wrote, its nearest sample is the pixel-nearest seed, and its
    same-person calls follow dlib's 0.6 threshold."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out, folder, picture = tmp_path / "audit.json", tmp_path / "projections", tmp_path / "audit.png"
    done = subprocess.run([sys.executable, str(root / "scripts" / "projection_audit.py"), str(style_run), "--ref", str(celeba_store32.path),
                           "--faces", "2", "--randoms", "6", "--steps", "3", "--distance", "pixels", "--out", str(out),
                           "--folder", str(folder), "--picture", str(picture)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["command"].startswith("python ") and "projection_audit.py" in record["command"]
    assert record["weights_sha256"] == sample.weights_hash(style_gen) and record["store"] == celeba_store32.content_hash
    rows = celeba_store32.subset_rows("holdout", 2)
    assert [f["holdout_row"] for f in record["per_face"]] == [int(r) for r in rows]
    samples = sample.generate(style_gen, list(range(6)), batch_size=50, psi=1.0)
    for face, real in zip(record["per_face"], np.asarray(celeba_store32.subset("holdout", 2))):
        made = png(folder / f"holdout-{face['holdout_row']:06d}" / "projected.png")
        mse = np.mean(((made.astype(float) - real.astype(float)) / 255) ** 2)
        assert face["psnr_projection_db"] == pytest.approx(10 * np.log10(1 / mse), abs=1e-3)
        pixel_mse = ((samples.astype(np.float32) - real.astype(np.float32)) ** 2).reshape(6, -1).mean(1)
        assert face["pixel_nearest_seed"] == int(pixel_mse.argmin())
        for key in ("projection", "nearest_random"):
            if face.get(f"same_{key}") is not None:
                assert face[f"same_{key}"] == (face[f"distance_{key}"] < 0.6)
    assert record["random_samples"]["n"] == 6 and record["projection"]["steps"] == 3
    summary, faces = record["summary"], record["per_face"]     # each share says how many pairs it stands on
    assert summary["projection_pairs_compared"] == sum(f.get("same_projection") is not None for f in faces)
    assert summary["psnr_projection_db_mean"] == pytest.approx(np.mean([f["psnr_projection_db"] for f in faces]), abs=1e-3)
    assert png(picture).shape[0] > 3 * 32 and png(picture).shape[1] >= 2 * 32       # three rows of two faces
