"""Pinned numbers of the three diffusion families (ddpm, ldm, sd) on tiny random nets: the
per-sample training loss for fixed seeds and a sampled face per sampler. The values in
tests/data/diffusion-pins.json were written by the code before the families shared one
diffusion core (facegen.families.diffusion); the move must not change any of them.

Regenerate (only when a number changes on purpose, and say why in the commit):
    python tests/test_diffusion_pins.py --write
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest
import torch

PINS = Path(__file__).parent / "data" / "diffusion-pins.json"
TRAIN = {"lr": 1e-4, "adam_betas": [0.9, 0.999], "weight_decay": 0.0, "mixed_precision": "no"}
TINY_UNET = {"block_out_channels": [8, 16], "layers_per_block": 1, "attention_resolutions": [], "norm_num_groups": 4,
             "num_train_timesteps": 100}
SEEDS = [3, 11]


def _faces(n: int = 4, side: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(7)) * 2 - 1


def _summary(t: torch.Tensor) -> list[float]:
    """A few numbers that move when any value moves: per-item mean, mean |x| and two entries."""
    t = t.detach().float().flatten(1)
    return [round(float(v), 6) for row in t for v in (row.mean(), row.abs().mean(), row[0], row[-1])]


def _tiny_autoencoder(folder: Path, resolution: int) -> Path:
    """An exported `ae` run folder (what `--autoencoder` takes) with a random 2x AutoencoderKL."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        sample_size=resolution, scaling_factor=0.8)
    model = folder / "model"
    vae.save_pretrained(model)
    (model / "facegen.json").write_text(json.dumps({"family": "ae", "resolution": resolution, "latent_scale": 0.8}))
    return folder


def _cases(tmp: Path) -> dict:
    """name -> (family, cfg, resolution, [sampler options]): every family and every loss option."""
    from facegen.families import get_family
    from facegen.families.sd.tiny import write_tiny_pipeline

    ddpm = get_family("ddpm").model_defaults
    ldm = get_family("ldm").model_defaults
    sd = get_family("sd").model_defaults
    ae = _tiny_autoencoder(tmp / "ae", 16)
    pipeline = write_tiny_pipeline(tmp / "sd", resolution=32)
    pixel_samplers = [{"sampler": "ddpm"}, {"sampler": "ddim"}, {"sampler": "ddim", "eta": 0.5}, {"sampler": "dpm++"},
                      {"sampler": "unipc"}]
    sd_samplers = [{"sampler": s} for s in ("default", "pndm", "ddim", "ddpm", "dpm++", "unipc", "euler-a")]
    sd_samplers.append({"sampler": "ddim", "guidance_scale": 1.0})
    return {
        "ddpm-epsilon": ("ddpm", {**ddpm, **TINY_UNET}, 16, pixel_samplers),
        "ddpm-v-minsnr": ("ddpm", {**ddpm, **TINY_UNET, "prediction_type": "v_prediction", "snr_gamma": 5.0}, 16, pixel_samplers),
        "ddpm-cosine-minsnr": ("ddpm", {**ddpm, **TINY_UNET, "beta_schedule": "squaredcos_cap_v2", "snr_gamma": 5.0}, 16, []),
        "ldm-v": ("ldm", {**ldm, **TINY_UNET, "prediction_type": "v_prediction", "autoencoder": str(ae)}, 16, pixel_samplers),
        "sd": ("sd", {**sd, "pretrained": str(pipeline), "prompt_dropout": 0.5, "gradient_checkpointing": False,
                      "optimizer": "adamw"}, 32, sd_samplers),
    }


def compute_pins() -> dict:
    from facegen.families import get_family

    pins = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (family_name, model, resolution, samplers) in _cases(Path(tmp)).items():
            family = get_family(family_name)
            cfg = {**TRAIN, "name": name, "model": model}
            torch.manual_seed(0)
            built = family.build(cfg, resolution)
            torch.manual_seed(1)
            loss, _ = built.loss("main", built.nets, _faces(side=resolution))
            pins[f"{name}/loss"] = [round(float(v), 6) for v in loss]
            generator = family.generator(built, cfg)
            for options in samplers:
                faces = generator.decode(generator.initial_noise(SEEDS), SEEDS, steps=4, **options)
                key = ",".join(f"{k}={v}" for k, v in options.items())
                pins[f"{name}/sample/{key}"] = _summary(faces)
    return pins


@pytest.fixture(scope="module")
def pins_now() -> dict:
    return compute_pins()


def test_the_pinned_cases_are_all_computed(pins_now):
    assert set(pins_now) == set(json.loads(PINS.read_text()))


@pytest.mark.parametrize("key", sorted(json.loads(PINS.read_text())) if PINS.is_file() else ["missing"])
def test_number_is_unchanged(pins_now, key):
    expected = json.loads(PINS.read_text())[key]
    assert pins_now[key] == pytest.approx(expected, abs=2e-5), key


if __name__ == "__main__" and "--write" in sys.argv:
    PINS.parent.mkdir(exist_ok=True)
    PINS.write_text(json.dumps(compute_pins(), indent=1) + "\n")
    print(f"wrote {PINS}")
