"""Serving every family and the morph frames: tiny random-weight pixel-diffusion, latent
diffusion and GAN models, exported by their families and loaded through facegen.sample
(the path `facegen serve RUN` takes), and the `facegen serve` command's one-line errors."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import export_tiny_ddpm
from facegen import sample
from facegen.serve.app import create_app
from facegen.serve.morph import morph_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_ddpm(tmp_path_factory):
    """A 16x16 UNet with a stochastic default sampler, 3 steps."""
    return sample.load_generator(export_tiny_ddpm(tmp_path_factory, "ddpm", 3), "cpu")


@pytest.fixture(scope="module")
def tiny_ldm(tmp_path_factory):
    """Latent diffusion on a random 16x16 autoencoder (latents 3x8x8), exported by the ldm family."""
    from diffusers import AutoencoderKL

    from facegen.families import Built, get_family
    from facegen.families.ldm import LatentDiffusionOptions
    from facegen.families.ldm.networks import make_latent_unet

    family = get_family("ldm")
    vae = AutoencoderKL(block_out_channels=[8, 8], down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=3, norm_num_groups=4, sample_size=16, layers_per_block=1)
    model = {**family.model_defaults, "block_out_channels": [8, 16], "layers_per_block": 1, "attention_resolutions": [],
             "norm_num_groups": 4, "num_train_timesteps": 100, "sampler": "ddim", "sample_steps": 2}
    built = Built(nets={"unet": make_latent_unet(LatentDiffusionOptions(**model), vae, 16)}, phases=[], loss=None, frozen={"vae": vae})
    run = tmp_path_factory.mktemp("runs") / "tiny-ldm"
    family.export(built, {"name": "tiny-ldm", "model": model}, run / "model")
    return sample.load_generator(run, "cpu")


@pytest.fixture(scope="module")
def tiny_gan(tiny_gan_model):
    return sample.load_generator(tiny_gan_model, "cpu")


def test_latent_diffusion_page_and_api(tiny_ldm):
    with TestClient(create_app(tiny_ldm)) as c:
        info = c.get("/info").json()
        face = c.get("/face.png?seed=9")
        page = c.get("/")
    assert info["family"] == "ldm" and info["resolution"] == 16 and "tiny-ldm" in page.text
    expected = sample.generate(tiny_ldm, [9])[0]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(face.content)).convert("RGB")), expected)


def test_diffusion_faces_by_seed_and_a_deterministic_morph(tiny_ddpm):
    with TestClient(create_app(tiny_ddpm, steps=2, max_batch=4)) as c:
        info = c.get("/info").json()
        assert info["family"] == "ddpm" and info["steps"] == 2 and info["sampler"] == "ddpm"
        face = c.get("/face.png?seed=5")
        morph = c.get("/morph.gif?from=5&to=6&frames=3")
    assert face.status_code == 200 and morph.status_code == 200
    assert np.asarray(Image.open(io.BytesIO(face.content))).shape == (16, 16, 3)
    # The face the server sent is the face `facegen sample` makes for that seed.
    expected = sample.generate(tiny_ddpm, [5], sampler="ddpm", steps=2)[0]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(face.content)).convert("RGB")), expected)
    assert Image.open(io.BytesIO(morph.content)).n_frames == 4


@pytest.mark.parametrize("family, psi", [("tiny_ddpm", None), ("tiny_ldm", None), ("tiny_gan", "1")])
def test_the_page_has_a_truncation_control_only_for_a_model_with_truncation(family, psi, request):
    with TestClient(create_app(request.getfixturevalue(family))) as c:
        page = c.get("/").text
    control = page[page.index("<label"):page.index(">", page.index("<label"))]
    assert 'id="psi-control"' in control and (" hidden" in control) == (psi is None)
    assert f'data-psi="{psi or ""}"' in page


@pytest.mark.parametrize("family", ["tiny_ddpm", "tiny_ldm", "tiny_gan"])
def test_morph_ends_are_the_two_seeds_faces(family, request):
    generator = request.getfixturevalue(family)
    frames = morph_frames(generator, 21, 22, 5)
    assert frames.shape == (5, generator.resolution, generator.resolution, 3)
    # A stochastic default (ddpm) is replaced by the deterministic DDIM for a smooth walk.
    options = {"sampler": "ddim"} if "samplers" in generator.info() else {}
    ends = sample.generate(generator, [21, 22], **options).astype(int)
    assert np.abs(frames[0].astype(int) - ends[0]).max() <= 1   # slerp's ends are the seeds' own noise (float rounding aside)
    assert np.abs(frames[-1].astype(int) - ends[1]).max() <= 1
    assert np.array_equal(morph_frames(generator, 21, 22, 5), frames)
    steps = np.abs(np.diff(frames.astype(int), axis=0)).mean(axis=(1, 2, 3))
    assert (steps > 0).all()                                     # every frame moves on


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facegen.cli", *args], capture_output=True, text=True, timeout=120)


def test_serve_command_missing_run_is_one_line(tmp_path):
    result = run_cli("serve", str(tmp_path / "no-such-run"), "--port", "1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-run" in lines[0] and lines[0].startswith("error:")
