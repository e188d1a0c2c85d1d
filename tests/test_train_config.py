"""Config: presets, typed overrides, refused keys, the batch arithmetic."""

from __future__ import annotations

import pytest

from facegen.config import load_config, per_process_batch, preset_names
from facegen.utils import FacegenError


def test_every_ddpm_preset_resolves_with_its_model_defaults_filled():
    ddpm = [name for name in preset_names() if name.startswith("ddpm-")]
    assert {"ddpm-celeba64", "ddpm-celeba64-cosine", "ddpm-gpu-best64", "ddpm-tiny32", "ddpm-tiny64"} <= set(ddpm)
    for name in ddpm:
        cfg = load_config(name)
        assert cfg["family"] == "ddpm" and "beta_schedule" in cfg["model"], name
    recipe = load_config("ddpm-celeba64")["model"]
    assert (recipe["num_train_timesteps"], recipe["beta_start"], recipe["beta_end"], recipe["prediction_type"]) == (1000, 1e-4, 0.02, "epsilon")
    assert load_config("ddpm-celeba64-cosine")["model"]["beta_schedule"] == "squaredcos_cap_v2"


def test_overrides_are_typed_and_nested(tmp_path):
    cfg = load_config("ddpm-tiny32", ["lr=3e-4", "ema.decay=0.99", "model.block_out_channels=[16, 32]",
                                      "grad_clip=null", "channels_last=true", "sample_options={sampler: unipc, steps: 7}"])
    assert cfg["lr"] == 3e-4 and cfg["ema"]["decay"] == 0.99 and cfg["ema"]["warmup"] is True
    assert cfg["model"]["block_out_channels"] == [16, 32] and cfg["grad_clip"] is None and cfg["channels_last"] is True
    assert cfg["sample_options"] == {"sampler": "unipc", "steps": 7}
    own = tmp_path / "mine.yaml"
    own.write_text("family: ddpm\nlr: 1e-4\nmodel:\n  layers_per_block: 1\n")
    assert load_config(own)["lr"] == 1e-4 and load_config(own)["model"]["layers_per_block"] == 1


@pytest.mark.parametrize("override, message", [
    ("lerning_rate=1", "unknown key 'lerning_rate'"),
    ("ema.half_life=3", "unknown key 'ema.half_life'"),
    ("model.depth=3", r"unknown model key\(s\) depth"),
    ("steps=0", "steps must be a positive integer"),
    ("mixed_precision=fp8", "mixed_precision must be one of"),
    ("time_limit=0", "time_limit is minutes"),
    ("time_limit=soon", "time_limit is minutes"),
    ("lr", "bad override 'lr': write key=value"),
    ("family=vae", "unknown family 'vae'"),
])
def test_mistakes_are_refused_with_a_clear_message(override, message):
    with pytest.raises(FacegenError, match=message):
        load_config("ddpm-tiny32", [override])


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(FacegenError, match="unknown preset 'ddpm-huge'.*ddpm-tiny32"):
        load_config("ddpm-huge")


def test_batch_size_is_global_and_must_split_evenly():
    cfg = load_config("ddpm-tiny32", ["batch_size=32", "grad_accum=2"])
    assert per_process_batch(cfg, world_size=1) == 16
    assert per_process_batch(cfg, world_size=4) == 4
    with pytest.raises(FacegenError, match="multiple of 6"):
        per_process_batch(cfg, world_size=3)


def test_a_bare_no_for_mixed_precision_means_no():
    # YAML 1.1 reads `no` as false; `mixed_precision=no` is what everyone types
    assert load_config("ddpm-tiny32", ["mixed_precision=no"])["mixed_precision"] == "no"


# ---- issue 18: values are checked before any work, through the CLI ------------------------


@pytest.mark.parametrize("override, message", [
    ("lr=abc", "lr must be a number (like its default 0.0001), got 'abc'"),
    ("lr=-1e-4", "lr must be a positive number"),
    ("steps=-5", "steps must be a positive integer, got -5"),
    ("batch_size=0", "batch_size must be a positive integer, got 0"),
    ("family=vae", "unknown family 'vae' (key family); choose one of"),
    ("model.sampler=euler", "model.sampler must be one of ddpm, ddim, dpm++, unipc for family 'ddpm', got 'euler'"),
    ("sample_options={sampler: euler}", "sample_options.sampler must be one of ddpm, ddim, dpm++, unipc"),
    ("sample_options={steps: 0}", "sample_options.steps must be a positive integer"),
    ("weight_decay=lots", "weight_decay must be a number"),
    ("ema.decay=high", "ema.decay must be a number"),
    ("adam_betas=[0.9]", "adam_betas must be two numbers in [0, 1)"),
    ("hflip=sometimes", "hflip must be true or false"),
    ("model.layers_per_block=two", "model.layers_per_block must be an integer"),
    ("sample_seeds=a-b", "sample_seeds must be a seed list"),
])
def test_bad_values_are_one_line_errors_naming_the_key_before_the_store_is_read(override, message, facegen, tmp_path):
    # The store does not exist: an error about it would mean the config was checked too late.
    done = facegen("train", "ddpm-tiny32", "--data", tmp_path / "no-store", "--out", tmp_path / "run", override)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ddpm-tiny32: ") and message in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def trained_run(celeba_store32, tmp_path_factory):
    """A real one-step dcgan-tiny32 run on celeba_store32 (a second or two)."""
    from facegen.train import train

    out = tmp_path_factory.mktemp("runs") / "dcgan"
    train("dcgan-tiny32", celeba_store32.path, out, steps=1, overrides=["tensorboard=false", "sample_seeds=0-3"])
    return out


def test_resume_refuses_another_preset_naming_both(trained_run, celeba_store32, facegen):
    done = facegen("train", "wgan-tiny32", "--data", celeba_store32.path, "--out", trained_run, "--resume", "--steps", "2")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"{trained_run} was trained with preset dcgan-tiny32, not wgan-tiny32" in done.stderr


def test_resume_refuses_another_store_naming_both(trained_run, celeba_store32, celeba_dir, facegen, tmp_path):
    from facegen.data.prepare import prepare

    other = prepare(celeba_dir, tmp_path / "other32", size=32, crop="center", limit=64, workers=1, progress=False).path  # also 32 px
    done = facegen("train", "dcgan-tiny32", "--data", other, "--out", trained_run, "--resume", "--steps", "2")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"trained on the face store {celeba_store32.path}, not {other}; resume it with --data {celeba_store32.path}" in done.stderr


def test_resume_with_the_same_preset_and_store_continues(trained_run, celeba_store32, facegen):
    done = facegen("train", "dcgan-tiny32", "--data", celeba_store32.path, "--out", trained_run, "--resume", "--steps", "2")
    assert done.returncode == 0, done.stderr
    assert (trained_run / "checkpoints" / "step-000002").is_dir()
