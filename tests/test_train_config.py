"""Config: presets, typed overrides, refused keys, the batch arithmetic."""

from __future__ import annotations

import pytest

from facegen.config import load_config, per_process_batch, preset_names
from facegen.utils import FacegenError


def test_every_ddpm_preset_resolves_with_its_model_defaults_filled():
    ddpm = [name for name in preset_names() if name.startswith("ddpm-")]
    assert {"ddpm-celeba64", "ddpm-celeba64-cosine", "ddpm-gpu-best64", "ddpm-tiny32", "ddpm-tiny32-v", "ddpm-tiny64", "ddpm-celeba64-edm"} <= set(ddpm)
    for name in ddpm:
        cfg = load_config(name)
        assert cfg["family"] == "ddpm" and "beta_schedule" in cfg["model"], name
    recipe = load_config("ddpm-celeba64")["model"]
    assert (recipe["num_train_timesteps"], recipe["beta_start"], recipe["beta_end"], recipe["prediction_type"]) == (1000, 1e-4, 0.02, "epsilon")
    assert load_config("ddpm-celeba64-cosine")["model"]["beta_schedule"] == "squaredcos_cap_v2"


def test_overrides_are_typed_and_nested(tmp_path):
    cfg = load_config("ddpm-tiny32-v", ["lr=3e-4", "ema.decay=0.99", "model.block_out_channels=[16, 32]",
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
        load_config("ddpm-tiny32-v", [override])


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(FacegenError, match="unknown preset 'ddpm-huge'.*ddpm-tiny32"):
        load_config("ddpm-huge")


def test_batch_size_is_global_and_must_split_evenly():
    cfg = load_config("ddpm-tiny32-v", ["batch_size=32", "grad_accum=2"])
    assert per_process_batch(cfg, world_size=1) == 16
    assert per_process_batch(cfg, world_size=4) == 4
    with pytest.raises(FacegenError, match="multiple of 6"):
        per_process_batch(cfg, world_size=3)


def test_a_bare_no_for_mixed_precision_means_no():
    # YAML 1.1 reads `no` as false; `mixed_precision=no` is what everyone types
    assert load_config("ddpm-tiny32-v", ["mixed_precision=no"])["mixed_precision"] == "no"


# ---- issue 18: values are checked before any work, through the CLI ------------------------


@pytest.mark.parametrize("override, message", [
    ("lr=abc", "lr must be a number (like the preset 0.0003), got 'abc'"),
    ("lr=-1e-4", "lr must be a positive number"),
    ("steps=-5", "steps must be a positive integer, got -5"),
    ("batch_size=0", "batch_size must be a positive integer, got 0"),
    ("family=vae", "unknown family 'vae' (key family); choose one of"),
    ("model.sampler=euler", "model.sampler: unknown sampler 'euler'; choose one of default, ddpm, ddim, pndm, dpm++, unipc, euler-a"),
    ("sample_options={sampler: euler}", "sample_options.sampler: unknown sampler 'euler'; choose one of default, ddpm, ddim"),
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
    refused_in_one_line(facegen, tmp_path, override, message)


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


# ---- issue 26: model values are range-checked when the config is read ---------------------


@pytest.mark.parametrize("override, message", [
    ("model.num_train_timesteps=-5", "model.num_train_timesteps must be a positive integer, got -5"),
    ("model.dropout=-3", "model.dropout must be a number in [0, 1), got -3"),
    ("model.layers_per_block=0", "model.layers_per_block must be a positive integer, got 0"),
    ("seed=-1", "seed must be an integer in [0, 2**32), got -1"),
    ("model.snr_gamma=-1", "model.snr_gamma must be a number > 0 or null, got -1"),
    ("model.sample_steps=0", "model.sample_steps must be a positive integer, got 0"),
    ("sample_options={sampler: ddim, stpes: 5}", "unknown sample_options key stpes for family 'ddpm'; known: eta, psi, sampler, steps"),
])
def test_out_of_range_values_are_refused_by_the_cli_in_one_line(override, message, facegen, tmp_path):
    refused_in_one_line(facegen, tmp_path, override, message)


@pytest.mark.parametrize("family, override, message", [
    ("ddpm", "model.dropout=1", "model.dropout must be a number in [0, 1), got 1"),
    ("ddpm", "model.block_out_channels=[]", "model.block_out_channels must be a non-empty list of positive integers, got []"),
    ("ddpm", "model.block_out_channels=[16, 0]", "model.block_out_channels must be a non-empty list of positive integers"),
    ("ddpm", "model.attention_resolutions=[-8]", "model.attention_resolutions must be a list of positive integers"),
    ("ddpm", "model.attention_head_dim=0", "model.attention_head_dim must be a positive integer"),
    ("ddpm", "model.norm_num_groups=0", "model.norm_num_groups must be a positive integer or null"),
    ("ddpm", "model.beta_start=0", "model.beta_start must be a number in (0, 1)"),
    ("ddpm", "model.beta_end=1.5", "model.beta_end must be a number in (0, 1)"),
    ("ddpm", "model.beta_start=0.05", "model.beta_start must be below model.beta_end (0 < beta_start < beta_end < 1), got 0.05 and 0.02"),
    ("ddpm", "model.snr_gamma=0", "model.snr_gamma must be a number > 0 or null"),
    ("ddpm", "model.sample_steps=2000", "model.sample_steps must be at most model.num_train_timesteps (1000), got 2000"),
    ("ddpm", "sample_options={steps: 1001}", "sample_options.steps must be at most model.num_train_timesteps (1000), got 1001"),
    ("ddpm", "sample_options={eta: 2}", "sample_options.eta must be a number in [0, 1], got 2"),
    ("ddpm", "sample_options={psi: 0.7}", "sample_options.psi must be 1 (truncation is for GANs), got 0.7"),
    ("ldm", "model.num_train_timesteps=0", "model.num_train_timesteps must be a positive integer, got 0"),
    ("ldm", "model.dropout=-0.1", "model.dropout must be a number in [0, 1)"),
    ("gan", "model.z_dim=0", "model.z_dim must be a positive integer, got 0"),
    ("gan", "model.n_critic=0", "model.n_critic must be a positive integer"),
    ("gan", "model.g_lr=0", "model.g_lr must be a number > 0 or null"),
    ("gan", "model.d_lr=fast", "model.d_lr must be a number > 0 or null, got 'fast'"),
    ("gan", "model.clip=-0.01", "model.clip must be a number > 0 or null"),
    ("gan", "model.gp_lambda=-10", "model.gp_lambda must be a number >= 0, got -10"),
    ("gan", "model.r1_gamma=-1", "model.r1_gamma must be a number >= 0"),
    ("gan", "model.l2_lambda=-1", "model.l2_lambda must be a number >= 0"),
    ("gan", "model.diverge_above=0", "model.diverge_above must be a number > 0 or null"),
    ("gan", "model.d_max_channels=0", "model.d_max_channels must be a positive integer"),
    ("gan", "sample_options={steps: 5}", "unknown sample_options key steps for family 'gan'; known: psi"),
    ("gan", "sample_options={psi: 0}", "sample_options.psi must be a number in (0, 1], got 0"),
    ("ae", "model.downsample=3", "model.downsample must be a power of 2 (2, 4, 8, ...), got 3"),
    ("ae", "model.kl_weight=-1", "model.kl_weight must be a number >= 0"),
    ("ae", "model.disc_start=-1", "model.disc_start must be an integer >= 0"),
    ("ae", "model.channels=[64, 0, 128]", "model.channels must be a non-empty list of positive integers"),
    ("ae", "model.eval_images=0", "model.eval_images must be a positive integer"),
    ("sd", "model.prompt_dropout=1", "model.prompt_dropout must be a number in [0, 1), got 1"),
    ("sd", "model.lora_rank=-4", "model.lora_rank must be an integer >= 0, got -4"),
    ("sd", "model.lora_alpha=0", "model.lora_alpha must be a number > 0 or null"),
    ("sd", "model.guidance_scale=-1", "model.guidance_scale must be a number >= 0"),
    ("sd", "model.sample_steps=0", "model.sample_steps must be a positive integer"),
    ("sd", "sample_options={guidance_scale: -2}", "sample_options.guidance_scale must be a number >= 0, got -2"),
    ("sd", "sample_options={eta: 0.5}", "unknown sample_options key eta for family 'sd'; known: guidance_scale, negative_prompt, prompt, psi, sampler, steps"),
    ("sd", "sample_options={prompt: 3}", "sample_options.prompt must be a string or null, got 3"),
])
def test_every_family_refuses_values_out_of_range_naming_key_range_and_value(family, override, message):
    with pytest.raises(FacegenError) as refused:
        load_config({"family": family}, [override])
    assert str(refused.value).startswith("config: ") and message in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("override", ["seed=4294967296", "seed=1.5", "ema.power=0", "ema.inv_gamma=-1", "ema.update_after_step=-1"])
def test_common_values_out_of_range_are_refused(override):
    with pytest.raises(FacegenError, match=override.split("=")[0] + " must be"):
        load_config("ddpm-tiny32-v", [override])


def test_every_preset_is_in_range():
    for name in preset_names():
        load_config(name)


def test_the_edges_of_the_ranges_are_allowed():
    load_config("ddpm-tiny32-v", ["seed=0", "model.dropout=0", "model.snr_gamma=null", "model.num_train_timesteps=25", "model.sample_steps=25",
                                "sample_options={sampler: ddim, steps: 25, eta: 1.0, psi: 1}"])
    load_config({"family": "gan"}, ["model.gp_lambda=0", "model.clip=0.01", "sample_options={psi: 0.5}"])
    load_config({"family": "sd"}, ["model.lora_rank=0", "model.guidance_scale=1", "sample_options={prompt: a face, negative_prompt: ''}"])


def test_every_numeric_model_key_of_every_family_has_a_range():
    from facegen.families import FAMILIES

    for name, family in FAMILIES.items():
        options = family.options
        for key, default in options.defaults().items():
            numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
            numbers = isinstance(default, list) and default and all(isinstance(v, int) for v in default)
            maybe_number = default is None and any(t in str(options.__dataclass_fields__[key].type) for t in ("int", "float"))
            if numeric or numbers or maybe_number:
                assert key in options.RANGES, f"{name}: model.{key} has no range"


def test_the_sample_options_a_family_accepts_are_those_its_generator_decodes():
    """sample_options go to Generator.decode (through facegen.sample.decode_options, which takes psi)."""
    import inspect

    from facegen.families import FAMILIES
    from facegen.families.ddpm.generator import DiffusionGenerator
    from facegen.families.gan.generator import GanGenerator
    from facegen.families.ldm.generator import LatentGenerator
    from facegen.families.sd.generator import DEFAULT_OPTIONS

    def decoded(cls):
        return {p for p in inspect.signature(cls.decode).parameters if p not in ("self", "noise", "seeds", "options")}

    accepted = {name: set(family.options.SAMPLE_OPTIONS) - {"psi"} for name, family in FAMILIES.items()}
    assert accepted["ddpm"] == decoded(DiffusionGenerator) and accepted["ldm"] == decoded(LatentGenerator)
    assert accepted["sd"] == set(DEFAULT_OPTIONS) and accepted["gan"] == decoded(GanGenerator) - {"psi"} == set()
    assert accepted["ae"] == set()  # its grids are reconstructions: nothing to choose


def test_a_wrong_kind_of_value_quotes_the_presets_value_not_the_global_default():
    from facegen.config import DEFAULTS, load_config
    from facegen.utils import FacegenError

    preset_lr = load_config("ddpm-tiny32-v")["lr"]
    assert preset_lr != DEFAULTS["lr"]
    with pytest.raises(FacegenError, match=rf"lr must be a number \(like the preset {preset_lr!r}\), got 'abc'"):
        load_config("ddpm-tiny32-v", ["lr=abc"])


def refused_in_one_line(facegen, tmp_path, override: str, message: str) -> None:
    """`facegen train` with a bad override: exit 2, one `error:` line with `message`, no traceback, no run."""
    done = facegen("train", "ddpm-tiny32-v", "--data", tmp_path / "no-store", "--out", tmp_path / "run", override)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ddpm-tiny32-v: ") and message in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()
