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
