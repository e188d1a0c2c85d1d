"""One denoising step, checked by hand: latents are never clamped, pixels are, and few-step DDIM
starts from pure noise (t = T-1)."""

from __future__ import annotations

import json

import pytest
import torch

from facegen import sample
from facegen.families import Built, get_family
from facegen.families.ddpm import DiffusionOptions
from facegen.families.ddpm.generator import TRAILING
from facegen.families.ddpm.networks import make_scheduler
from facegen.families.diffusion import samplers

SAMPLERS = [name for name in samplers.names("ddpm") if name != "default"]


def make_sampler(name: str, train_config):
    """A sampler as the pixel family builds it."""
    return samplers.make_scheduler(name, train_config, **TRAILING)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _last_step_x0(scheduler, x0: float) -> float:
    """Run the final step of a 1-step schedule on x_t whose predicted x_0 is `x0` (epsilon = 0).

    With one trailing step the step goes from t = T-1 straight to alpha_bar = 1, so the
    returned sample is the (possibly clamped) predicted x_0 itself."""
    scheduler.set_timesteps(1)
    t = scheduler.timesteps[0]
    x_t = torch.full((1, 3, 4, 4), x0) * scheduler.alphas_cumprod[t].sqrt()
    return scheduler.step(torch.zeros_like(x_t), t, x_t).prev_sample.flatten()[0].item()


@pytest.fixture(scope="module")
def tiny_ldm_run(tmp_path_factory):
    """Latent diffusion on a random 16x16 autoencoder, exported by the ldm family."""
    from diffusers import AutoencoderKL

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
    return run


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_a_latent_of_2_5_survives_a_step(tiny_ldm_run, sampler):
    generator = sample.load_generator(tiny_ldm_run, "cpu")
    scheduler = generator.scheduler(sampler)
    assert scheduler.config.clip_sample is False
    if sampler == "ddim":
        assert _last_step_x0(scheduler, 2.5) == pytest.approx(2.5, abs=1e-4)


def test_the_training_schedule_and_the_exported_pipeline_do_not_clamp_latents(tiny_ldm_run):
    from diffusers import DDIMScheduler

    from facegen.families.ldm import LatentDiffusionOptions
    from facegen.families.ldm.networks import make_latent_scheduler

    assert make_latent_scheduler(LatentDiffusionOptions()).config.clip_sample is False
    # What plain diffusers (LDMPipeline.from_pretrained) samples with.
    exported = DDIMScheduler.from_pretrained(tiny_ldm_run / "model" / "scheduler")
    assert exported.config.timestep_spacing == "trailing"
    assert _last_step_x0(exported, 2.5) == pytest.approx(2.5, abs=1e-4)


def test_latent_models_exported_with_clamping_sample_without_it(tiny_ldm_run, tmp_path):
    import shutil

    old = tmp_path / "old-ldm"
    shutil.copytree(tiny_ldm_run, old)
    config_file = old / "model" / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "clip_sample": True, "timestep_spacing": "leading"}))
    generator = sample.load_generator(old, "cpu")
    assert _last_step_x0(generator.scheduler("ddim"), 2.5) == pytest.approx(2.5, abs=1e-4)


def test_pixels_are_still_clamped_to_the_image_range():
    pixel = make_scheduler(DiffusionOptions())
    assert _last_step_x0(make_sampler("ddim", pixel.config), 2.5) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("steps", [10, 25, 50])
def test_few_step_ddim_starts_from_pure_noise(steps):
    scheduler = make_sampler("ddim", make_scheduler(DiffusionOptions()).config)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps.tolist()
    assert len(timesteps) == steps and timesteps[0] == 999
    # Equal strides, and the last step lands on alpha_bar = 1 (t - stride < 0).
    strides = {a - b for a, b in zip(timesteps, timesteps[1:])}
    assert max(strides) - min(strides) <= 1 and timesteps[-1] - 1000 // steps < 0


# ---- issue 26: every sampler of the registry starts from pure noise ------------------------


def test_ten_step_ancestral_ddpm_visits_the_last_training_timestep():
    scheduler = make_sampler("ddpm", make_scheduler(DiffusionOptions()).config)
    scheduler.set_timesteps(10)
    timesteps = scheduler.timesteps.tolist()
    assert len(timesteps) == 10 and timesteps[0] == 999  # of 1000: x_T is pure noise, not partly denoised


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_of_the_registry_spaces_its_steps_trailing(name):
    scheduler = make_sampler(name, make_scheduler(DiffusionOptions()).config)
    assert scheduler.config.timestep_spacing == "trailing"
    scheduler.set_timesteps(10)
    assert int(scheduler.timesteps[0]) == 999


@pytest.mark.parametrize("name", SAMPLERS)
def test_no_sampler_of_the_latent_family_clamps_or_thresholds(tiny_ldm_run, name):
    generator = sample.load_generator(tiny_ldm_run, "cpu")
    scheduler = generator.scheduler(name)
    for key in ("clip_sample", "thresholding"):
        if key in scheduler.config:
            assert scheduler.config[key] is False, key
