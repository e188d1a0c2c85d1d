"""GAN family units: networks, loss terms, augmentation, sampler, export (no training loop)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from facegen.families import get_family
from facegen.families.gan import FAMILY, GanOptions
from facegen.families.gan import loss as L
from facegen.families.gan.augment import cutout, diff_augment, translation
from facegen.families.gan.networks import Discriminator, Generator, upsample_factors
import copy

from facegen.families.gan.generator import GanGenerator
from facegen.families.gan.sampler import standing_stats
from facegen.utils import FacegenError

SMALL = dict(g_channels=32, g_min_channels=8, d_channels=8, d_max_channels=32)


class LinearCritic(nn.Module):
    """D(x) = <w, x>: its gradient is w everywhere, so the penalties have closed forms."""

    def __init__(self, shape):
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape))

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


# ---- networks ------------------------------------------------------------------------


@pytest.mark.parametrize("resolution, factors", [(32, [2, 2, 2]), (64, [2, 2, 2, 2]), (96, [3, 2, 2, 2]), (128, [2] * 5)])
def test_generator_and_discriminator_shapes(resolution, factors):
    assert upsample_factors(resolution) == factors
    G = Generator(resolution, z_dim=200, channels=32, min_channels=8)
    D = Discriminator(resolution, channels=8, max_channels=32)
    x = G(torch.randn(2, 200))
    assert x.shape == (2, 3, resolution, resolution)
    assert x.abs().max() <= 1
    assert D(x).shape == (2,)


def test_unsupported_resolution_is_a_clear_error():
    with pytest.raises(ValueError, match="4\\*2\\^k"):
        upsample_factors(80)
    with pytest.raises(FacegenError, match="gan config"):
        FAMILY.build({"model": SMALL}, 80)


def test_sigmoid_output_is_rescaled_to_data_range():
    G = Generator(32, z_dim=8, channels=16, output="sigmoid")
    x = G(torch.randn(64, 8) * 10)
    assert x.min() < -0.5 and x.max() > 0.5 and x.abs().max() <= 1


def test_he_init_scale_and_spectral_norm():
    D = Discriminator(64, channels=64, norm="none")
    w = D.features[0].weight                            # fan_in 3*4*4, leaky slope 0.2
    assert w.std().item() == pytest.approx(math.sqrt(2 / (1 + 0.2**2) / 48), rel=0.1)
    D_sn = Discriminator(32, channels=8, spectral_norm=True, norm="none")
    for m in D_sn.modules():
        if isinstance(m, nn.Conv2d):
            for _ in range(20):                          # power iterations converge in training mode
                D_sn(torch.randn(2, 3, 32, 32))
            sigma = torch.linalg.matrix_norm(m.weight.flatten(1), ord=2)
            assert sigma.item() == pytest.approx(1.0, abs=0.05)


def test_layer_norm_critic_does_not_mix_samples():
    D = Discriminator(32, channels=8, norm="layer")
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(D(x)[:1], D(x[:1]), atol=1e-5)


# ---- loss terms ----------------------------------------------------------------------


def test_adversarial_terms_on_known_scores():
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([0.0, -2.0])
    assert torch.allclose(L.d_nonsaturating(real, fake), torch.tensor([2 * math.log(2), 2 * math.log1p(math.exp(-2))]))
    assert torch.allclose(L.g_nonsaturating(fake), torch.tensor([math.log(2), math.log1p(math.exp(2))]))
    assert torch.equal(L.wgan_critic(real, fake), torch.tensor([0.0, -4.0]))
    assert torch.equal(L.wgan_generator(fake), torch.tensor([0.0, 2.0]))
    assert torch.equal(L.hinge_critic(real, fake), torch.tensor([2.0, 0.0]))


def test_gradient_penalty_of_a_linear_critic_is_closed_form():
    torch.manual_seed(0)
    critic = LinearCritic((3, 4, 4))
    gp = L.gradient_penalty(critic, torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4))
    expected = (critic.w.norm() - 1) ** 2
    assert gp.shape == (5,) and torch.allclose(gp, expected.expand(5))
    gp.sum().backward()                                 # create_graph: the penalty trains the critic
    assert critic.w.grad is not None and critic.w.grad.abs().sum() > 0


def test_r1_penalty_of_a_linear_critic_is_closed_form():
    critic = LinearCritic((3, 4, 4))
    real = torch.randn(3, 3, 4, 4, requires_grad=True)
    r1 = L.r1_penalty(critic(real), real)
    assert torch.allclose(r1, critic.w.pow(2).sum().expand(3))


def test_l2_weights_counts_conv_and_linear_weights_only():
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
    for p in net.parameters():
        nn.init.constant_(p, 2.0)
    assert L.l2_weights(net).item() == (6 + 3) * 4.0


def test_weight_clipping_bounds_every_parameter():
    D = Discriminator(32, channels=8)
    after_step = L.clip_weights(D, 0.01)
    after_step()
    values = torch.cat([p.flatten() for p in D.parameters()])
    assert values.abs().max().item() <= 0.01 and (values.abs() == 0.01).any()


def test_loss_per_phase_shapes_and_logs():
    built = FAMILY.build({"model": {**SMALL, "gp_lambda": 10.0, "objective": "wgan", "d_norm": "layer"}}, 32)
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    loss_d, logs_d = built.loss("D", built.nets, images)
    loss_g, logs_g = built.loss("G", built.nets, images)
    assert loss_d.shape == loss_g.shape == (3,)
    assert set(logs_d) == {"score_real", "score_fake", "gp"} and set(logs_g) == set()
    assert built.phases[0].loss_bound is None  # diverge_above: off unless set (the loop's guard: tests/test_gan_train.py)


def test_l2_and_r1_and_augment_appear_in_logs():
    built = FAMILY.build({"model": {**SMALL, "objective": "hinge", "spectral_norm": True, "r1_gamma": 1.0, "l2_lambda": 0.02,
                                  "augment": ["color", "translation", "cutout"]}}, 32)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    _, logs_d = built.loss("D", built.nets, images)
    _, logs_g = built.loss("G", built.nets, images)
    assert {"score_real", "r1", "l2_D"} <= set(logs_d) and {"l2_G"} == set(logs_g)
    assert logs_d["r1"] > 0


def test_phases_follow_the_recipes():
    wgan = FAMILY.build({"model": {**SMALL, "objective": "wgan", "optimizer": "rmsprop", "g_lr": 1e-4, "d_lr": 1e-4, "n_critic": 5, "clip": 0.01}}, 32)
    d, g = wgan.phases
    assert (d.name, d.nets, d.repeats, g.name, g.nets) == ("D", ["D"], 5, "G", ["G"])
    assert isinstance(d.optimizer, torch.optim.RMSprop) and d.after_step is not None and wgan.ema == ["G"]
    gp = FAMILY.build({"adam_betas": [0.0, 0.9], "lr": 3e-4, "model": {**SMALL, "g_lr": 1e-4}}, 32)
    assert gp.phases[1].optimizer.defaults["betas"] == (0.0, 0.9) and gp.phases[0].after_step is None
    assert gp.phases[1].optimizer.defaults["lr"] == 1e-4 and gp.phases[0].optimizer.defaults["lr"] == 3e-4


def test_unknown_option_is_a_one_line_error():
    with pytest.raises(FacegenError, match="unknown model key.*lamda"):
        GanOptions.from_config({"model": {"lamda": 10}})
    assert get_family("gan") is FAMILY


# ---- augmentation --------------------------------------------------------------------


def test_diff_augment_is_differentiable_and_seeded():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    aug = diff_augment(["color", "translation", "cutout"])
    torch.manual_seed(1)
    y1 = aug(x)
    torch.manual_seed(1)
    y2 = aug(x)
    assert y1.shape == x.shape and torch.equal(y1, y2)
    y1.sum().backward()
    assert x.grad.abs().sum() > 0


def test_translation_and_cutout_move_and_hide_pixels():
    x = torch.ones(8, 3, 16, 16)
    torch.manual_seed(0)
    assert (cutout(x) == 0).float().mean().item() > 0.1        # a square of ~half the side per image
    shifted = translation(x)
    assert ((shifted == 0).flatten(1).any(1)).any()             # some image was shifted: zeros came in


# ---- sampler and export --------------------------------------------------------------


def _generator(resolution=32):
    torch.manual_seed(0)
    G = Generator(resolution, z_dim=16, channels=32, min_channels=8)
    G.train()(torch.randn(8, 16))                              # move the batch-norm running stats off their init
    return GanGenerator(G, "test", resolution)


def test_seed_gives_the_same_face_whatever_the_batch():
    gen = _generator()
    alone = gen.decode(gen.initial_noise([7]), [7])
    in_batch = gen.decode(gen.initial_noise([3, 7, 9, 11]), [3, 7, 9, 11])
    assert torch.allclose(alone[0], in_batch[1], atol=1e-5)
    assert not torch.allclose(in_batch[0], in_batch[1])


def test_interpolation_endpoints_are_the_seeds_faces():
    gen = _generator()
    path = gen.interpolate(4, 5, steps=6)
    ends = gen.decode(gen.initial_noise([4, 5]), [4, 5])
    assert path.shape == (6, 3, 32, 32)
    assert torch.allclose(path[0], ends[0], atol=1e-5) and torch.allclose(path[-1], ends[1], atol=1e-5)


def test_standing_stats_match_the_exported_weights_and_keep_the_rng():
    torch.manual_seed(0)
    G = Generator(32, z_dim=16, channels=32, min_channels=8)
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(3)                               # weights moved on (as an EMA does); running stats stale
    z = torch.randn(512, 16)
    with torch.no_grad():
        batch_stats = G.train()(z)
        stale = (G.eval()(z) - batch_stats).abs().mean()
        rng = torch.get_rng_state()
        standing_stats(G, n=512)
        assert torch.equal(torch.get_rng_state(), rng) and not G.training
        fresh = (G.eval()(z) - batch_stats).abs().mean()
    assert fresh < 0.05 < stale


def test_export_then_load_gives_identical_faces(tmp_path):
    cfg = {"name": "tiny", "model": {**SMALL, "z_dim": 16}}
    built = FAMILY.build(cfg, 32)
    built.nets["G"].train()(torch.randn(4, 16))
    FAMILY.export(built, cfg, tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["facegen.json", "generator.safetensors"]
    gen = FAMILY.load_generator(tmp_path / "model")
    want = GanGenerator(standing_stats(copy.deepcopy(built.nets["G"])), "tiny", 32)
    seeds = [0, 1, 2]
    assert torch.equal(gen.decode(gen.initial_noise(seeds), seeds), want.decode(want.initial_noise(seeds), seeds))
    assert gen.info()["resolution"] == 32 and gen.info()["family"] == "gan"
    from facegen.sample import load_generator              # what `facegen sample` uses: finds the family by facegen.json
    assert torch.equal(load_generator(tmp_path, "cpu").decode(gen.initial_noise([5])), gen.decode(gen.initial_noise([5])))
    with pytest.raises(FacegenError, match="not an exported GAN"):
        FAMILY.load_generator(tmp_path)


# ---- residual nets (SN-GAN ResNet) -----------------------------------------------------


@pytest.mark.parametrize("resolution", [32, 64])
def test_resnet_generator_and_discriminator_shapes_and_residual_paths(resolution):
    from facegen.families.gan.networks import ResDiscriminator, ResGenerator

    G = ResGenerator(resolution, z_dim=16, channels=32, min_channels=8)
    D = ResDiscriminator(resolution, channels=8, max_channels=32)
    x = G(torch.randn(3, 16))
    assert x.shape == (3, 3, resolution, resolution) and x.abs().max() <= 1
    assert D(x).shape == (3,)
    assert len(G.blocks) == int(math.log2(resolution // 4)) and len(D.blocks) == int(math.log2(resolution // 4))
    # every D layer is spectrally normalised: its weight's largest singular value is about 1
    conv = D.blocks[1].conv1
    for _ in range(20):
        D(x)
    w = conv.weight.detach().flatten(1)
    assert torch.linalg.matrix_norm(w, ord=2) == pytest.approx(1.0, abs=0.05)


def test_resnet_export_records_the_architecture_and_reloads(tmp_path):
    cfg = {"name": "res", "model": {**SMALL, "z_dim": 16, "g_arch": "resnet", "d_arch": "resnet", "d_norm": "none",
                                     "spectral_norm": True}}
    built = FAMILY.build(cfg, 32)
    assert type(built.nets["G"]).__name__ == "ResGenerator" and type(built.nets["D"]).__name__ == "ResDiscriminator"
    FAMILY.export(built, cfg, tmp_path)
    import json
    assert json.loads((tmp_path / "facegen.json").read_text())["generator"]["arch"] == "resnet"
    gen = FAMILY.load_generator(tmp_path)
    want = GanGenerator(standing_stats(copy.deepcopy(built.nets["G"])), "res", 32)
    assert torch.equal(gen.decode(gen.initial_noise([3])), want.decode(want.initial_noise([3])))


def test_old_exports_without_arch_load_as_dcgan(tmp_path):
    import json
    cfg = {"name": "old", "model": {**SMALL, "z_dim": 16}}
    FAMILY.export(FAMILY.build(cfg, 32), cfg, tmp_path)
    meta = json.loads((tmp_path / "facegen.json").read_text())
    del meta["generator"]["arch"]
    (tmp_path / "facegen.json").write_text(json.dumps(meta))
    assert type(FAMILY.load_generator(tmp_path).G).__name__ == "Generator"


def test_resnet_choices_are_checked():
    with pytest.raises(FacegenError, match="d_norm=none"):
        FAMILY.build({"model": {**SMALL, "d_arch": "resnet", "d_norm": "batch"}}, 32)
    with pytest.raises(FacegenError, match="unknown architecture"):
        FAMILY.build({"model": {**SMALL, "g_arch": "stylegan"}}, 32)
