"""Latent diffusion end to end on 32x32 CelebA faces with dummy-sized nets: the autoencoder
trains, resumes exactly and writes its reconstruction metrics and latent scale; the latent
UNet trains on it (from the latent cache), resumes exactly, samples by seed and loads as a
diffusers LDMPipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from facegen.utils import FacegenError

COMMON = ["batch_size=4", "checkpoint_every=2", "sample_every=4", "sample_seeds=0-3", "log_every=1", "tensorboard=false"]
AE = ["family=ae", "lr=0.001", "model.channels=[16,32,32]", "model.norm_groups=8", "model.layers_per_block=1",
      "model.disc_channels=8", "model.disc_layers=2", "model.disc_start=2", "model.perceptual=features",
      "model.scale_images=448", "model.eval_images=16"]
LDM = ["family=ldm", "model.block_out_channels=[16,32]", "model.attention_resolutions=[4]", "model.layers_per_block=1",
       "model.attention_head_dim=8", "model.sample_steps=2", "sample_options={sampler: ddim, steps: 2}", "model.cache_latents=true"]


def train(preset, store, out, extra, steps, resume=False):
    from facegen.train import train as run

    return run(preset, store.path, out, overrides=[*COMMON, *extra], steps=steps, resume=resume)


def weights(run, net):
    step = max((run / "checkpoints").iterdir())
    return load_file(step / "nets" / f"{net}.safetensors")


@pytest.fixture(scope="module")
def ae_run(celeba_store32, tmp_path_factory):
    """4 steps straight; the discriminator's adversarial term starts at step 2."""
    out = tmp_path_factory.mktemp("ae") / "run"
    train("ae-tiny64", celeba_store32, out, AE, steps=4)
    return out


@pytest.fixture(scope="module")
def ldm_run(celeba_store32, ae_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("ldm") / "run"
    train("ldm-tiny64", celeba_store32, out, [*LDM, f"model.autoencoder={ae_run}"], steps=4)
    return out


def test_autoencoder_exports_metrics_grids_and_scale(ae_run):
    model = ae_run / "model"
    info = json.loads((model / "facegen.json").read_text())
    assert info["family"] == "ae" and info["resolution"] == 32 and info["downsample"] == 4
    recon = json.loads((model / "reconstruction.json").read_text())
    assert recon["split"] == "holdout" and recon["images"] == 16
    assert 5 < recon["psnr"] < 60 and -1 <= recon["ssim"] <= 1 and recon["rfid"] > 0 and recon["rfid_images"] == 16
    assert (ae_run / "samples" / "reconstructions.png").is_file()
    assert (ae_run / "samples" / "step-000004.png").is_file()  # the loop's grid: reconstructions of holdout faces
    rows = [json.loads(line) for line in (ae_run / "metrics.jsonl").read_text().splitlines()]
    assert "loss_G" not in rows[0] and rows[-1]["loss_G"] is not None  # GAN term from step 2 (0-based) on
    assert rows[0]["loss_D"] > 0  # feature matching: D trains from the start


def test_latent_scale_gives_unit_variance(ae_run, celeba_store32):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(ae_run / "model")
    assert vae.config.scaling_factor == json.loads((ae_run / "model" / "facegen.json").read_text())["latent_scale"]
    faces = torch.from_numpy(np.array(celeba_store32.split("train"))).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        z = vae.encode(faces).latent_dist.sample(generator=torch.Generator().manual_seed(1)) * vae.config.scaling_factor
    assert z.shape[1:] == (3, 8, 8)
    assert 0.9 < z.std().item() < 1.1  # unit variance after scaling
    holdout = torch.from_numpy(np.array(celeba_store32.split("holdout"))).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():  # faces the scale was not measured on: still about unit variance
        z = vae.encode(holdout).latent_dist.sample(generator=torch.Generator().manual_seed(2)) * vae.config.scaling_factor
    assert 0.8 < z.std().item() < 1.25


def test_autoencoder_resume_is_exact(ae_run, celeba_store32, tmp_path):
    out = tmp_path / "run"
    train("ae-tiny64", celeba_store32, out, AE, steps=2)
    from typer.testing import CliRunner

    from facegen.cli import app

    args = ["train", "ae-tiny64", "--data", str(celeba_store32.path), "--out", str(out), "--resume", "--steps", "4", *COMMON, *AE]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "--autoencoder" in result.output and "facegen sample" not in result.output  # a first stage is not sampled
    for net in ("vae", "disc"):
        a, b = weights(ae_run, net), weights(out, net)
        assert all(torch.equal(a[k], b[k]) for k in a), net
    assert int(weights(out, "vae")["steps"]) == 4


def test_autoencoder_is_not_a_generator(ae_run):
    from facegen.sample import load_generator

    with pytest.raises(FacegenError, match="autoencoder"):
        load_generator(ae_run)


def test_ldm_trains_resumes_and_samples(ldm_run, celeba_store32, ae_run, tmp_path):
    from facegen.sample import generate, load_generator

    out = tmp_path / "run"
    train("ldm-tiny64", celeba_store32, out, [*LDM, f"model.autoencoder={ae_run}"], steps=2)
    train("ldm-tiny64", celeba_store32, out, [], steps=4, resume=True)  # the run's config keeps the autoencoder
    a, b = weights(ldm_run, "unet"), weights(out, "unet")
    assert all(torch.equal(a[k], b[k]) for k in a)

    gen = load_generator(ldm_run, device="cpu")
    assert gen.family == "ldm" and gen.resolution == 32
    assert gen.initial_noise([0, 1]).shape == (2, 3, 8, 8)  # x_T lives in latent space
    one = generate(gen, [3, 5, 7], batch_size=3, sampler="ddim", steps=2)
    two = generate(gen, [3, 5, 7], batch_size=2, sampler="ddim", steps=2)
    assert one.shape == (3, 32, 32, 3) and one.dtype == np.uint8 and one.std() > 0
    # A face depends only on its seed: batches of 3 and of 2 give the same faces, up to the
    # float round-off of batched CPU convolutions (~1e-6 here; at most one uint8 level).
    assert np.abs(one.astype(int) - two).max() <= 1 and (one == two).mean() > 0.99
    assert (ldm_run / "samples" / "step-000004.png").is_file()


def test_ldm_loads_as_diffusers_pipeline(ldm_run):
    from diffusers import AutoencoderKL, LDMPipeline

    pipe = LDMPipeline.from_pretrained(ldm_run / "model")
    assert isinstance(pipe.vqvae, AutoencoderKL) and pipe.vqvae.config.scaling_factor != 1.0
    images = pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 32, 32, 3) and np.isfinite(images).all()


def test_ldm_run_evaluates_like_a_pixel_run(ldm_run, celeba_store32, facegen, tmp_path):
    out = tmp_path / "report"
    done = facegen("eval", ldm_run, "--ref", celeba_store32.path, "--n", "8", "--metrics", "kid,faces", "--out", out,
                   cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert len(list((out / "samples").glob("seed*.png"))) == 8
    report = json.loads((out / "metrics.json").read_text())
    assert report["source"]["kind"] == "run" and report["metrics"]["kid"]["n_generated"] == 8
    faces = report["metrics"]["faces"]["generated"]
    assert faces["n"] == 8 and 0 <= faces["one_face_share"] <= 1


def test_latent_cache_matches_the_encoder(ldm_run, ae_run, celeba_store32):
    from diffusers import AutoencoderKL

    from facegen.families.latents import CachedLatents

    (path,) = (ae_run / "latents").glob("latents-*.npy")  # beside the autoencoder: RUN_AE/latents/
    cache = CachedLatents(path)
    assert (len(cache), cache.flips) == (len(celeba_store32), 2)  # every face and its mirror image
    vae = AutoencoderKL.from_pretrained(ae_run / "model")
    faces = torch.from_numpy(np.array(celeba_store32.split("train")[:4])).permute(0, 3, 1, 2).float() / 127.5 - 1
    moments = torch.stack([cache[(i, flip)] for flip in (False, True) for i in range(4)])
    with torch.no_grad():
        posterior = vae.encode(torch.cat([faces, faces.flip(3)])).latent_dist
    mean, logvar = moments.chunk(2, dim=1)
    assert torch.allclose(mean, posterior.mean, atol=2e-2)
    assert torch.allclose((0.5 * logvar).exp(), posterior.std, rtol=2e-3, atol=1e-3)  # log-variance kept in float16


def test_latent_cache_is_keyed_by_the_autoencoder_weights(ae_run, celeba_store32, tmp_path):
    """An autoencoder retrained in place (same folder, same store) never trains an LDM on the old weights' latents."""
    import shutil

    from diffusers import AutoencoderKL

    from facegen.config import load_config
    from facegen.families import get_family

    ae = tmp_path / "ae"
    shutil.copytree(ae_run / "model", ae / "model")
    cfg = load_config("ldm-tiny64", [*LDM, f"model.autoencoder={ae}", f"data={celeba_store32.path}"])
    get_family("ldm").build(cfg, 32)                  # caches the latents of the first weights
    vae = AutoencoderKL.from_pretrained(ae / "model")
    with torch.no_grad():
        vae.encoder.conv_in.weight.mul_(1.5)           # "retrained": other weights, same config and scale
    vae.save_pretrained(ae / "model")
    built = get_family("ldm").build(cfg, 32)
    assert len(list((ae / "latents").iterdir())) == 2  # a cache per weights: the first one is not reused

    faces = torch.from_numpy(np.array(celeba_store32.split("train")[:2])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        posterior = vae.encode(faces).latent_dist
    mean, logvar = torch.stack([built.dataset[(i, False)] for i in range(2)]).chunk(2, dim=1)
    assert torch.allclose(mean, posterior.mean, atol=2e-2) and torch.allclose(logvar, posterior.logvar, atol=2e-2)


def test_ldm_needs_an_autoencoder(celeba_store32, ldm_run, tmp_path):
    with pytest.raises(FacegenError, match="--autoencoder"):
        train("ldm-tiny64", celeba_store32, tmp_path / "a", LDM, steps=1)
    with pytest.raises(FacegenError, match="not an exported autoencoder"):
        train("ldm-tiny64", celeba_store32, tmp_path / "b", [*LDM, f"model.autoencoder={ldm_run}"], steps=1)


def test_relative_autoencoder_path_is_recorded_absolute(celeba_store32, ae_run, tmp_path, monkeypatch):
    """A run records --autoencoder as an absolute path, so --resume works from another directory."""
    import os

    import yaml
    from typer.testing import CliRunner

    from facegen.cli import app

    monkeypatch.chdir(ae_run.parent)
    args = ["train", "ldm-tiny64", "--data", str(celeba_store32.path), "--out", str(tmp_path / "run"),
            "--autoencoder", os.path.relpath(ae_run), "--dry-run", *COMMON, *LDM]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["model"]["autoencoder"] == str(ae_run.resolve())
