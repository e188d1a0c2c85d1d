"""The one diffusion core (facegen.families.diffusion): EDM's preconditioning by hand, Heun on a
Gaussian whose exact denoiser is known, min-SNR weights against the formula, one-line refusals,
and every sampler name of the registry through sample, eval, serve and morph for ddpm, ldm
(each objective) and sd."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from facegen import sample
from facegen.config import load_config
from facegen.families import get_family
from facegen.families.diffusion.edm import EDMHeunScheduler, edm_scheduler, precondition
from facegen.families.diffusion.loop import denoise
from facegen.families.diffusion.loss import DdpmObjective, DenoisingLoss, EdmObjective
from facegen.families.diffusion.samplers import SAMPLERS, make_scheduler, names
from facegen.utils import FacegenError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_UNET = {"block_out_channels": [8, 16], "layers_per_block": 1, "attention_resolutions": [], "norm_num_groups": 4,
             "num_train_timesteps": 100}
TRAIN = {"lr": 1e-4, "adam_betas": [0.9, 0.999], "weight_decay": 0.0, "mixed_precision": "no"}


# ---- EDM preconditioning ---------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.002, 0.5, 1.7, 80.0])
def test_edm_preconditioning_matches_table_1_by_hand(sigma):
    c_skip, c_out, c_in, c_noise = (float(c) for c in precondition(torch.tensor([sigma], dtype=torch.float64), 0.5))
    assert c_skip == pytest.approx(0.25 / (sigma**2 + 0.25))
    assert c_out == pytest.approx(sigma * 0.5 / math.sqrt(sigma**2 + 0.25))
    assert c_in == pytest.approx(1 / math.sqrt(sigma**2 + 0.25))
    assert c_noise == pytest.approx(math.log(sigma) / 4)


def test_training_and_diffusers_edm_samplers_precondition_alike():
    """What the loss trains is what EDMEulerScheduler / EDM DPM-Solver unwrap: the export samples in plain diffusers."""
    scheduler = edm_scheduler(0.002, 80.0, 0.5)
    sigma = torch.tensor([0.3, 2.0, 40.0]).view(-1, 1, 1, 1)
    x, f = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    c_skip, c_out, c_in, c_noise = precondition(sigma, 0.5)
    torch.testing.assert_close(scheduler.precondition_outputs(x, f, sigma), c_skip * x + c_out * f)
    torch.testing.assert_close(scheduler.precondition_inputs(x, sigma), c_in * x)
    torch.testing.assert_close(scheduler.precondition_noise(sigma), c_noise)


def test_edm_loss_is_the_weighted_denoising_error():
    """Zero network output: D = c_skip * x, loss = lambda(sigma) * mean (D - x_0)^2, for the same draws."""
    x_0 = torch.rand(5, 3, 4, 4) * 2 - 1
    objective = EdmObjective(sigma_data=0.5, p_mean=-1.2, p_std=1.2)
    zero = lambda x, t: type("Out", (), {"sample": torch.zeros_like(x)})()
    torch.manual_seed(4)
    loss, _ = DenoisingLoss(objective)("main", {"unet": zero}, x_0)
    torch.manual_seed(4)
    sigma = (torch.randn(5) * 1.2 - 1.2).exp()
    x = x_0 + torch.randn_like(x_0) * sigma.view(-1, 1, 1, 1)
    c_skip = 0.25 / (sigma**2 + 0.25)
    expected = (sigma**2 + 0.25) / (sigma * 0.5) ** 2 * (c_skip.view(-1, 1, 1, 1) * x - x_0).square().mean(dim=(1, 2, 3))
    torch.testing.assert_close(loss, expected)


# ---- Heun on a Gaussian -----------------------------------------------------------------------


class GaussianDenoiser(torch.nn.Module):
    """The exact EDM network F for data ~ N(mu, s^2) per entry: D(x; sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu),
    unwrapped from the preconditioning (input c_in x, time c_noise = ln(sigma) / 4)."""

    dtype = torch.float32

    def __init__(self, mu: float, s: float, sigma_data: float = 0.5):
        super().__init__()
        self.mu, self.s, self.sigma_data = mu, s, sigma_data
        self.calls = 0

    def forward(self, x_in, c_noise):
        self.calls += 1
        sigma = torch.as_tensor(c_noise, dtype=torch.float64).mul(4).exp()
        c_skip, c_out, c_in, _ = precondition(sigma, self.sigma_data)
        x = x_in.double() / c_in
        exact = self.mu + self.s**2 / (self.s**2 + sigma**2) * (x - self.mu)
        return type("Out", (), {"sample": ((exact - c_skip * x) / c_out).float()})()


def _flow(x_T: torch.Tensor, mu: float, s: float, sigma_max: float) -> torch.Tensor:
    """The probability-flow ODE's exact end point for Gaussian data: the deviation shrinks by s / sqrt(s^2 + sigma_max^2)."""
    return mu + (x_T * sigma_max - mu) * s / math.sqrt(s**2 + sigma_max**2)


def _algorithm_1(x_T: torch.Tensor, mu: float, s: float, steps: int) -> torch.Tensor:
    """EDM's Algorithm 1 (deterministic Heun) written out in float64 with the exact Gaussian denoiser."""
    ramp = [(80 ** (1 / 7) + i / (steps - 1) * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7 for i in range(steps)] + [0.0]
    denoised = lambda x, sigma: mu + s**2 / (s**2 + sigma**2) * (x - mu)
    x = x_T.double() * 80
    for now, nxt in zip(ramp, ramp[1:]):
        slope = (x - denoised(x, now)) / now
        x_next = x + (nxt - now) * slope
        if nxt > 0:
            x_next = x + (nxt - now) * (slope + (x_next - denoised(x_next, nxt)) / nxt) / 2
        x = x_next
    return x


def _sample(name: str, x_T: torch.Tensor, mu: float, s: float, steps: int) -> tuple[torch.Tensor, int]:
    net = GaussianDenoiser(mu, s)
    return denoise(net, make_scheduler(name, edm_scheduler(0.002, 80.0, 0.5).config), x_T, steps).double(), net.calls


def test_heun_is_edm_algorithm_1_and_converges_to_the_exact_ode_solution_at_second_order():
    mu, s = 0.3, 0.5
    x_T = torch.randn(4000, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    exact = _flow(x_T.double(), mu, s, 80.0)
    x_0, calls = _sample("heun", x_T, mu, s, 18)
    assert calls == 35  # 18 steps: 2 * 18 - 1 network evaluations, as in the EDM paper
    torch.testing.assert_close(x_0, _algorithm_1(x_T, mu, s, 18), atol=2e-4, rtol=0)
    error = {(name, n): float((_sample(name, x_T, mu, s, n)[0] - exact).abs().max())
             for name, n in (("heun", 18), ("heun", 36), ("heun", 150), ("edm-euler", 35), ("edm-euler", 70))}
    assert error[("heun", 18)] / error[("heun", 36)] > 3.5, error          # second order: twice the steps, ~4x smaller
    assert error[("edm-euler", 35)] / error[("edm-euler", 70)] < 2.5, error  # first order: ~2x
    assert error[("heun", 18)] < error[("edm-euler", 35)], error           # equal evaluations: Heun wins
    x_0, _ = _sample("heun", x_T, mu, s, 150)
    assert error[("heun", 150)] < 2e-3 and float(x_0.std()) == pytest.approx(float(exact.std()), rel=2e-3)


def test_heun_starts_at_sigma_max_and_ends_at_zero():
    scheduler = EDMHeunScheduler.from_config(edm_scheduler(0.002, 80.0, 0.5).config)
    scheduler.set_timesteps(5)
    sigmas = [float(sigma) for sigma, _, _ in scheduler.plan]
    assert len(scheduler.timesteps) == 9 and sigmas[0] == pytest.approx(80.0) and sigmas[-1] == pytest.approx(0.002, rel=1e-3)
    assert scheduler.init_noise_sigma == 80.0 and float(scheduler.sigmas[-1]) == 0.0


# ---- min-SNR-gamma ----------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_follow_the_formula(prediction_type):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    x_0 = torch.rand(64, 3, 4, 4) * 2 - 1
    zero = lambda x, t: type("Out", (), {"sample": torch.zeros_like(x)})()
    losses = {}
    for gamma in (None, 5.0):
        torch.manual_seed(2)
        losses[gamma], _ = DenoisingLoss(DdpmObjective(scheduler, gamma))("main", {"unet": zero}, x_0)
    torch.manual_seed(2)
    torch.randn_like(x_0)
    t = torch.randint(0, 1000, (64,))
    abar = scheduler.alphas_cumprod[t]
    snr = abar / (1 - abar)
    weight = torch.minimum(snr, torch.tensor(5.0)) / (snr + 1 if prediction_type == "v_prediction" else snr)
    torch.testing.assert_close(losses[5.0], losses[None] * weight)
    assert (weight < 1).any() and (weight <= 1 + 1e-6).all()


def test_stable_diffusion_trains_with_min_snr_too(tmp_path):
    from facegen.families.sd.tiny import write_tiny_pipeline

    family = get_family("sd")
    pipeline = write_tiny_pipeline(tmp_path / "sd", resolution=32)
    model = {**family.model_defaults, "pretrained": str(pipeline), "gradient_checkpointing": False, "optimizer": "adamw"}
    faces = torch.rand(4, 3, 32, 32) * 2 - 1
    losses = {}
    for gamma in (None, 5.0):
        built = family.build({**TRAIN, "model": {**model, "snr_gamma": gamma}}, 32)
        torch.manual_seed(0)
        losses[gamma], _ = built.loss("main", built.nets, faces)
    ratio = losses[5.0] / losses[None]
    assert (ratio < 1).any() and (ratio <= 1 + 1e-6).all()


# ---- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    (["model.objective=edm"], "sampler 'ddim' cannot sample a model trained with objective 'edm'; choose one of default, heun"),
    (["model.sampler=heun"], "model.sampler: sampler 'heun' cannot sample a model trained with objective 'ddpm'"),
    (["model.objective=edm", "model.sampler=heun", "sample_options.sampler=heun", "model.snr_gamma=5"],
     "model.snr_gamma weights the ddpm objective"),
    (["model.snr_gamma=-1"], "model.snr_gamma"),
    (["model.objective=score"], "model.objective must be one of ddpm, edm, got 'score'"),
    (["model.sampler=heun", "model.objective=edm", "sample_options.sampler=unipc"], "sample_options.sampler: sampler 'unipc' cannot"),
    (["model.sampler=euler"], "unknown sampler 'euler'"),
])
def test_a_sampler_or_objective_that_cannot_work_is_refused_in_one_line(overrides, message):
    with pytest.raises(FacegenError, match=message.replace("(", r"\(").replace(".", r"\.")) as e:
        load_config("ddpm-tiny32-v", overrides)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("preset, sigma_data", [("ddpm-tiny32", 0.5), ("ddpm-celeba64-edm", 0.5), ("ldm-ffhq128-edm", 1.0)])
def test_the_edm_presets_name_edm_samplers_and_their_sigma_data(preset, sigma_data):
    """The pilot's winner (ddpm-tiny32) and its GPU options: objective edm, samplers that serve it."""
    cfg = load_config(preset)
    assert cfg["model"]["objective"] == "edm" and cfg["model"]["sigma_data"] == sigma_data
    assert SAMPLERS[cfg["model"]["sampler"]].objective == "edm" and SAMPLERS[cfg["sample_options"]["sampler"]].objective == "edm"


def test_the_cpu_preset_trains_exports_and_samples_as_edm(celeba_store32, tmp_path):
    """ddpm-tiny32 as shipped (only the size and cadences shrunk): 2 steps, an EDM export that
    `facegen sample` reads with the preset's sampler, and the v-prediction recipe kept beside it."""
    import json

    from facegen.train import train

    small = ["model.block_out_channels=[8,16]", "model.attention_resolutions=[]", "batch_size=4", "sample_every=100",
             "checkpoint_every=100", "tensorboard=false", "threads=1"]
    train("ddpm-tiny32", celeba_store32.path, tmp_path / "run", small, steps=2)
    meta = json.loads((tmp_path / "run" / "model" / "facegen.json").read_text())
    assert meta["objective"] == "edm"
    generator = sample.load_generator(tmp_path / "run", "cpu")
    assert generator.info()["sampler"] == "edm-dpm++"
    faces = sample.generate(generator, [0, 1], batch_size=2, steps=3)
    assert faces.shape == (2, 32, 32, 3) and faces.dtype == np.uint8 and faces[0].std() > 0
    assert load_config("ddpm-tiny32-v")["model"]["prediction_type"] == "v_prediction"


def test_stable_diffusion_refuses_a_negative_min_snr_gamma():
    with pytest.raises(FacegenError, match="model.snr_gamma"):
        load_config("sd-tiny-cpu", ["model.snr_gamma=-2"])


# ---- every sampler through sample, eval, serve and morph -------------------------------------


def _tiny_vae(resolution: int = 16):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=[8, 8], down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                         latent_channels=3, norm_num_groups=4, sample_size=resolution, layers_per_block=1, scaling_factor=0.9)


def _export(tmp_path_factory, family_name: str, objective: str):
    """A random tiny model of `family_name` trained with `objective`, exported by its family: the run folder."""
    from facegen.families import Built

    family = get_family(family_name)
    run = tmp_path_factory.mktemp("runs") / f"{family_name}-{objective}"
    sampler = "heun" if objective == "edm" else "ddim"
    model = {**family.model_defaults, **TINY_UNET, "objective": objective, "sampler": sampler, "sample_steps": 2}
    cfg = {**TRAIN, "name": run.name, "model": model}
    torch.manual_seed(0)
    if family_name == "ldm":
        from facegen.families.ldm import LatentDiffusionOptions
        from facegen.families.ldm.networks import make_latent_unet

        vae = _tiny_vae()
        built = Built(nets={"unet": make_latent_unet(LatentDiffusionOptions(**model), vae, 16)}, phases=[], loss=None, frozen={"vae": vae})
    else:
        built = family.build(cfg, 16)
    family.export(built, cfg, run / "model")
    return run


def _export_sd(tmp_path_factory):
    from facegen.families.sd.tiny import write_tiny_pipeline

    root = tmp_path_factory.mktemp("runs")
    family = get_family("sd")
    model = {**family.model_defaults, "pretrained": str(write_tiny_pipeline(root / "base", resolution=32)),
             "gradient_checkpointing": False, "optimizer": "adamw", "sample_steps": 2}
    cfg = {**TRAIN, "name": "tiny-sd", "model": model}
    family.export(family.build(cfg, 32), cfg, root / "tiny-sd" / "model")
    return root / "tiny-sd"


MODELS = [("ddpm", "ddpm"), ("ddpm", "edm"), ("ldm", "ddpm"), ("ldm", "edm"), ("sd", "ddpm")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    made = {(f, o): _export(tmp_path_factory, f, o) for f, o in MODELS if f != "sd"}
    made[("sd", "ddpm")] = _export_sd(tmp_path_factory)
    return made


CASES = [(f, o, name) for f, o in MODELS for name in names(o)]


def test_the_cases_cover_every_sampler_of_the_registry():
    assert {name for _, _, name in CASES} == set(SAMPLERS)


@pytest.mark.parametrize("family, objective, name", CASES)
def test_every_sampler_samples_evaluates_serves_and_morphs(runs, family, objective, name, tmp_path):
    from facegen.data.store import FaceStore
    from facegen.evaluate import open_source
    from facegen.serve.morph import morph_frames

    run = runs[(family, objective)]
    generator = sample.load_generator(run, "cpu")
    assert generator.info()["objective"] == objective and name in generator.info()["samplers"]
    steps = 3
    # sample: one face per seed, the same in any batch
    faces = sample.generate(generator, [5, 6, 7], batch_size=3, sampler=name, steps=steps)
    apart = sample.generate(generator, [7], batch_size=1, sampler=name, steps=steps)
    side = generator.resolution
    assert faces.shape == (3, side, side, 3) and faces.std() > 0
    np.testing.assert_allclose(faces[2].astype(int), apart[0].astype(int), atol=1)
    # eval: the run is sampled by evaluation's own path with these options
    source = open_source(run, 2, tmp_path / "eval", FaceStore.__new__(FaceStore), "holdout", {"sampler": name, "steps": steps}, False)
    assert len(source.images) == 2 and source.record["settings"]["sampler"] == name
    # serve and morph
    client = TestClient(__import__("facegen.serve.app", fromlist=["create_app"]).create_app(generator, steps=steps, sampler=name))
    with client:
        response = client.get("/face.png", params={"seed": 5})
        assert response.status_code == 200 and Image.open(io.BytesIO(response.content)).size == (side, side)
        assert client.get("/morph.gif", params={"from": 5, "to": 6, "frames": 3}).status_code == 200
    frames = morph_frames(generator, 5, 6, 3, sampler=name, steps=steps)
    assert frames.shape == (3, side, side, 3)
    if not SAMPLERS[name].stochastic:  # the walk starts on seed 5's own face
        np.testing.assert_allclose(frames[0].astype(int), faces[0].astype(int), atol=1)


@pytest.mark.parametrize("family, objective, wrong", [("ddpm", "ddpm", "heun"), ("ldm", "edm", "ddim"), ("sd", "ddpm", "edm-dpm++")])
def test_sampler_of_the_other_objective_is_refused_by_the_cli_in_one_line(runs, facegen, family, objective, wrong, tmp_path):
    result = facegen("sample", str(runs[(family, objective)]), "--n", "1", "--out", str(tmp_path), "--sampler", wrong)
    assert result.returncode == 2 and f"--sampler {wrong}: this {family} model (objective {objective}) takes one of" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_edm_export_samples_like_the_live_generator(runs):
    """The export records the objective and the EDM scheduler; loaded, it makes the live model's faces."""
    import json

    run = runs[("ddpm", "edm")]
    meta = json.loads((run / "model" / "facegen.json").read_text())
    scheduler = json.loads((run / "model" / "scheduler" / "scheduler_config.json").read_text())
    assert meta["objective"] == "edm" and scheduler["_class_name"] == "EDMEulerScheduler" and scheduler["sigma_data"] == 0.5
    assert json.loads((runs[("ldm", "edm")] / "model" / "scheduler" / "scheduler_config.json").read_text())["sigma_data"] == 1.0
    loaded = sample.load_generator(run, "cpu")
    from diffusers import UNet2DModel

    from facegen.families.ddpm.generator import DiffusionGenerator

    live = DiffusionGenerator(UNet2DModel.from_pretrained(run / "model" / "unet"), edm_scheduler(0.002, 80.0, 0.5).config, sampler="heun", steps=2)
    noise = loaded.initial_noise([1, 2])
    torch.testing.assert_close(loaded.decode(noise, [1, 2]), live.decode(noise, [1, 2]))
