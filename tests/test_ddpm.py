"""Pixel diffusion: the loss, the schedules, weight-standardised UNets, the export and per-seed sampling."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMPipeline

from facegen.config import load_config
from facegen.families import get_family
from facegen.families.base import Built
from facegen.families.ddpm import DiffusionGenerator
from facegen.nets.unet import plain_copy
from facegen.sample import generate, load_generator

SMALL = ["resolution=16", "model.block_out_channels=[8,16]", "model.layers_per_block=1", "model.attention_resolutions=[8]"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets on a shared machine: one thread is the fastest
    yield
    torch.set_num_threads(threads)


def build(*overrides: str) -> tuple[Built, dict]:
    cfg = load_config("ddpm-tiny32-v", [*SMALL, *overrides])
    torch.manual_seed(0)
    return get_family("ddpm").build(cfg, 16), cfg


@pytest.mark.parametrize("overrides", [
    [],
    ["model.prediction_type=v_prediction", "model.beta_schedule=squaredcos_cap_v2", "model.num_train_timesteps=1500"],
    ["model.beta_schedule=scaled_linear", "model.num_train_timesteps=2000", "model.snr_gamma=5"],
])
def test_loss_is_one_finite_value_per_sample_and_trains(overrides):
    built, _ = build(*overrides)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    loss, logs = built.loss("main", built.nets, images)
    assert loss.shape == (4,) and torch.isfinite(loss).all() and logs == {}
    loss.mean().backward()
    assert all(p.grad is not None for p in built.nets["unet"].parameters() if p.requires_grad)


def test_unknown_schedule_and_model_keys_are_refused():
    from facegen.utils import FacegenError

    with pytest.raises(FacegenError, match="beta_schedule must be one of"):
        build("model.beta_schedule=cosine")
    with pytest.raises(FacegenError, match=r"unknown model key\(s\) channels"):
        load_config("ddpm-tiny32-v", ["model.channels=3"])


def test_weight_standardised_unet_exports_as_a_plain_unet_with_the_same_outputs():
    built, _ = build("model.weight_standardized=true")
    unet = built.nets["unet"]
    weight = unet.down_blocks[0].resnets[0].conv1.weight  # standardised on the fly
    assert weight.mean(dim=(1, 2, 3)).abs().max() < 1e-5
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    plain = plain_copy(unet)
    assert not any(hasattr(m, "parametrizations") for m in plain.modules())
    torch.testing.assert_close(plain(x, t).sample, unet(x, t).sample, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ws", [False, True])
def test_export_loads_with_plain_diffusers_and_with_facegen(tmp_path, ws):
    built, cfg = build(f"model.weight_standardized={str(ws).lower()}")
    family = get_family("ddpm")
    family.export(built, cfg, tmp_path / "model")
    pipe = DDPMPipeline.from_pretrained(tmp_path / "model")
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([123])
    with torch.no_grad():
        torch.testing.assert_close(pipe.unet(x, t).sample, built.nets["unet"](x, t).sample, rtol=1e-5, atol=1e-5)
    assert pipe.scheduler.config.num_train_timesteps == cfg["model"]["num_train_timesteps"]
    generator = load_generator(tmp_path / "model")
    assert generator.info()["resolution"] == 16 and generator.info()["sampler"] == cfg["model"]["sampler"]


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++", "unipc"])
def test_each_seed_gives_the_same_image_whatever_the_batch(sampler):
    built, cfg = build()
    generator = get_family("ddpm").generator(built, cfg)
    assert isinstance(generator, DiffusionGenerator)
    options = {"sampler": sampler, "steps": 4}
    together = generate(generator, [3, 1, 4, 5], batch_size=4, **options)
    alone = generate(generator, [3, 1, 4, 5], batch_size=1, **options)
    split = generate(generator, [3, 1, 4, 5], batch_size=3, **options)
    assert together.shape == (4, 16, 16, 3) and together.dtype == "uint8"
    # Batched convolutions may round differently in the last bit: allow one grey level.
    assert abs(together.astype(int) - alone).max() <= 1
    assert abs(together.astype(int) - split).max() <= 1
    assert abs(together[0].astype(int) - together[1]).mean() > 10  # different seeds, different images
    again = generate(generator, [4], batch_size=1, **options)
    assert (again[0] == alone[2]).all()
