"""The StyleGAN2 nets of the gan family (g_arch/d_arch "style"), truncation in w, style mixing,
the R3GAN objective (rpgan + R1 + R2) and path length: units on tiny nets, then the
stylegan-tiny32 presets trained, resumed exactly, exported and sampled."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from facegen import sample
from facegen.config import load_config
from facegen.families.gan import FAMILY
from facegen.families.gan import loss as L
from facegen.families.gan.generator import GanGenerator
from facegen.families.gan.networks import Generator, make_discriminator, make_generator
from facegen.families.gan.style import (
    EqualConv2d,
    EqualLinear,
    ModulatedConv2d,
    StyleDiscriminator,
    StyleGenerator,
    minibatch_stddev,
)
from facegen.utils import FacegenError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"z_dim": 16, "channels": 32, "min_channels": 8}
STYLE = {"g_arch": "style", "d_arch": "style", "g_norm": "none", "g_output": "linear", "d_norm": "none",
         "z_dim": 16, "g_channels": 32, "g_min_channels": 8, "d_channels": 8, "d_max_channels": 32}


def trained_looking(G: StyleGenerator) -> StyleGenerator:
    """G with a w_avg away from 0 (a few training-mode forwards) and noise switched on, as after training."""
    torch.manual_seed(0)
    G.train()
    for _ in range(50):
        G(torch.randn(8, G.z_dim))
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
    return G.eval()


@pytest.fixture(scope="module")
def gen() -> GanGenerator:
    torch.manual_seed(1)
    return GanGenerator(trained_looking(StyleGenerator(32, **TINY)), "style", 32)


# ---- networks ------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_generator_and_discriminator_shapes(resolution):
    G = StyleGenerator(resolution, **TINY)
    D = StyleDiscriminator(resolution, channels=8, max_channels=32)
    x = G(torch.randn(3, 16))
    assert x.shape == (3, 3, resolution, resolution) and torch.isfinite(x).all()
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2      # StyleGAN2's count: 18 at 1024 px
    assert len(G.blocks) == int(math.log2(resolution)) - 1 and len(D.blocks) == int(math.log2(resolution)) - 2
    assert D(x).shape == (3,)
    assert G.synthesis(torch.randn(3, G.num_ws, 16)).shape == x.shape       # per-layer ws
    assert G.synthesis(torch.randn(3, 16)).shape == x.shape                 # one w for every layer


def test_make_generator_and_discriminator_know_style():
    assert isinstance(make_generator("style", resolution=32, z_dim=8, w_dim=12, mapping_layers=3, channels=16, min_channels=8,
                                     norm="none", output="tanh"), StyleGenerator)
    assert isinstance(make_discriminator("style", 32, 8, 32, "none", False), StyleDiscriminator)
    G = make_generator("style", resolution=32, z_dim=8, w_dim=12, mapping_layers=3, channels=16, min_channels=8)
    assert G.w_avg.shape == (12,) and len(G.mapping) == 3 and G.mapping[0].weight.shape == (12, 8)
    assert G(torch.randn(2, 8)).shape == (2, 3, 32, 32)


def test_equalized_lr_stores_unit_weights_and_scales_at_runtime():
    torch.manual_seed(0)
    lin, conv = EqualLinear(256, 64), EqualConv2d(64, 32, 3)
    assert lin.weight.std().item() == pytest.approx(1, abs=0.05) and lin.weight_gain == pytest.approx(1 / 16)
    assert conv.weight.std().item() == pytest.approx(1, abs=0.05) and conv.weight_gain == pytest.approx(1 / math.sqrt(64 * 9))
    x = torch.randn(4, 64, 8, 8)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight / math.sqrt(64 * 9), conv.bias, padding=1))
    assert lin(torch.randn(4096, 256)).std().item() == pytest.approx(1, abs=0.05)  # unit variance in, unit variance out
    # The mapping network learns 100x slower: stored weights 100x larger, the same effective scale.
    G = StyleGenerator(32, **TINY)
    layer = G.mapping[0]
    assert layer.weight.std().item() == pytest.approx(100, rel=0.2) and layer.weight_gain == pytest.approx(0.01 / 4)
    assert (layer.weight * layer.weight_gain).std().item() == pytest.approx(0.25, rel=0.2)
    # Every conv / linear weight of both nets is stored unscaled: no weight is built He-scaled.
    D = StyleDiscriminator(32, channels=8, max_channels=32)
    for net in (G, D):
        for m in net.modules():
            if isinstance(m, (EqualLinear, EqualConv2d, ModulatedConv2d)):
                assert hasattr(m, "weight_gain")
        assert not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in net.modules())


def test_demodulation_undoes_any_scale_of_the_styles():
    torch.manual_seed(0)
    conv, x, w = ModulatedConv2d(8, 16, 12, 3), torch.randn(2, 8, 8, 8), torch.randn(2, 12)
    before = conv(x, w)
    with torch.no_grad():
        conv.affine.weight.mul_(3)
        conv.affine.bias.mul_(3)
    torch.testing.assert_close(conv(x, w), before, rtol=1e-4, atol=1e-5)
    # Demodulated output channels have unit norm weights: about unit variance for unit inputs.
    assert conv(torch.randn(64, 8, 8, 8), torch.randn(64, 12)).std().item() == pytest.approx(1, abs=0.1)


def test_minibatch_stddev_groups_samples_and_takes_any_batch():
    x = torch.randn(8, 3, 4, 4)
    y = minibatch_stddev(x)
    assert y.shape == (8, 4, 4, 4) and torch.equal(y[:, :3], x)
    # Groups of 4 are samples i, i+2, i+4, i+6: sample 0 and 2 share a value, 0 and 1 do not.
    want = (x[0::2].var(0, unbiased=False) + 1e-8).sqrt().mean()
    torch.testing.assert_close(y[0, 3], want.expand(4, 4))
    torch.testing.assert_close(y[2, 3], y[0, 3])
    assert not torch.equal(y[0, 3], y[1, 3])
    assert minibatch_stddev(torch.randn(6, 3, 4, 4)).shape == (6, 4, 4, 4)  # group of 3
    assert minibatch_stddev(torch.randn(1, 3, 4, 4))[0, 3].abs().max() < 1e-3  # alone: no spread


def test_residual_d_block_scales_by_one_over_sqrt2():
    D = StyleDiscriminator(8, channels=4, max_channels=8)
    block, x = D.blocks[0], torch.randn(2, 4, 8, 8)
    skip = block.skip(F.avg_pool2d(x, 2))
    main = block.conv1(F.avg_pool2d(block.conv0(x), 2))
    torch.testing.assert_close(block(x), (skip + main) / math.sqrt(2))


# ---- w_avg, noise, truncation, mixing ----------------------------------------------------


def test_w_avg_follows_w_in_training_and_stays_in_eval():
    torch.manual_seed(0)
    G = StyleGenerator(32, **TINY)
    assert "w_avg" in dict(G.named_buffers()) and "w_avg" in G.state_dict()
    z = torch.randn(8, 16)
    G.eval()(z)
    assert torch.equal(G.w_avg, torch.zeros(16))                         # eval: untouched
    G.train()(z)
    w = G.eval().map(z)
    torch.testing.assert_close(G.w_avg, 0.005 * w.mean(0))               # w_avg.lerp(mean w, 1 - 0.995) from 0
    before = G.w_avg.clone()
    G.train()(z, mix_z=torch.randn(8, 16), mix_layer=3)                  # the mixing w leaves it alone
    torch.testing.assert_close(G.w_avg, before.lerp(w.mean(0), 0.005))
    assert torch.equal(copy.deepcopy(G).w_avg, G.w_avg)                  # what the EMA / export copies carry


def test_noise_is_random_in_training_and_fixed_when_sampling(gen):
    G, z = gen.G, torch.randn(2, 16)
    ws = G.map(z)
    G.train()                                                           # (synthesis alone: w_avg stays as it is)
    try:
        assert not torch.equal(G.synthesis(ws), G.synthesis(ws))           # training: fresh noise every forward
    finally:
        G.eval()
    assert torch.equal(G(z), G(z)) and torch.equal(G(z), G(z, noise_mode="const"))
    assert not torch.equal(G(z), G(z, noise_mode="none"))               # the noise does reach the image
    assert all(name in G.state_dict() for name in ("blocks.0.convs.0.noise_const", "blocks.3.convs.1.noise_const"))


def test_psi_0_is_the_average_face_for_every_seed(gen):
    faces = gen.decode(gen.initial_noise([0, 1, 2, 3]), [0, 1, 2, 3], psi=0.0)
    for face in faces[1:]:
        torch.testing.assert_close(face, faces[0], rtol=0, atol=1e-6)
    with torch.no_grad():
        avg = gen.G.synthesis(gen.G.w_avg.expand(1, -1)).clamp(-1, 1)
    torch.testing.assert_close(faces[0], avg[0], rtol=0, atol=1e-5)


def test_psi_1_is_bitwise_the_untruncated_forward(gen):
    z = gen.initial_noise([0, 1, 2])
    with torch.no_grad():
        plain = gen.G(z).clamp(-1, 1)
        assert torch.equal(gen.G.map(z, psi=1.0), gen.G.map(z))
    assert torch.equal(gen.decode(z, [0, 1, 2], psi=1.0), plain) and torch.equal(gen.decode(z, [0, 1, 2]), plain)


def test_psi_pulls_w_toward_w_avg_and_keeps_faces_distinct(gen):
    z = gen.initial_noise([0, 1, 2])
    with torch.no_grad():
        _, ws = gen.G(z, psi=0.5, return_ws=True)
        w = gen.G.map(z)
    torch.testing.assert_close(ws[:, 0], gen.G.w_avg + 0.5 * (w - gen.G.w_avg))    # w' = w_avg + psi (w - w_avg), in w not z
    assert torch.equal(ws[:, 0], ws[:, -1])                                          # one w for every layer
    half, full = gen.decode(z, [0, 1, 2], psi=0.5), gen.decode(z, [0, 1, 2])
    assert not torch.allclose(half, full)
    assert all(not torch.allclose(half[i], half[j], atol=1e-3) for i, j in [(0, 1), (0, 2), (1, 2)])
    avg = gen.decode(z[:1], [0], psi=0.0)[0]
    assert ((half - avg).abs().mean(dim=(1, 2, 3)) < (full - avg).abs().mean(dim=(1, 2, 3))).all()  # nearer the average face


def test_a_seed_is_the_same_face_in_any_batch(gen):
    for psi in (1.0, 0.7):
        alone = gen.decode(gen.initial_noise([7]), [7], psi=psi)
        batch = gen.decode(gen.initial_noise([3, 7, 9, 11]), [3, 7, 9, 11], psi=psi)
        torch.testing.assert_close(alone[0], batch[1], rtol=0, atol=1e-5)
    one, many = sample.generate(gen, [7], psi=0.7)[0], sample.generate(gen, [3, 7, 9], batch_size=3, psi=0.7)[1]
    assert np.abs(one.astype(int) - many).max() <= 1                  # pixels: within one grey level (docs/DESIGN.md)


def test_style_mixing_with_the_seed_itself_is_its_own_face(gen):
    seeds = [4, 5]
    z = gen.initial_noise(seeds)
    own = gen.decode(z, seeds)                                   # (a batch of 2; the mixes below are batches of 1: ~1e-6 apart)
    torch.testing.assert_close(gen.decode(z[:1], seeds[:1], mix_seed=4)[0], own[0], rtol=0, atol=1e-5)
    mixed = gen.decode(z[:1], seeds[:1], mix_seed=5)
    assert not torch.allclose(mixed, own[:1], atol=1e-3) and not torch.allclose(mixed, own[1:], atol=1e-3)
    # The crossover layer: all of the seed's own ws (num_ws) or all of the other's (0).
    torch.testing.assert_close(gen.decode(z[:1], seeds[:1], mix_seed=5, mix_layer=gen.G.num_ws)[0], own[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(gen.decode(z[:1], seeds[:1], mix_seed=5, mix_layer=0)[0], own[1], rtol=0, atol=1e-5)
    with pytest.raises(FacegenError, match="mix_layer 99 is out of range"):
        gen.decode(z, seeds, mix_seed=5, mix_layer=99)
    # The sampling entry point passes it through.
    assert np.array_equal(sample.generate(gen, [4], mix_seed=5, psi=0.8), sample.generate(gen, [4], mix_seed=5, psi=0.8))
    plain = GanGenerator(Generator(32, z_dim=8, channels=16, min_channels=8), "dcgan", 32)
    with pytest.raises(FacegenError, match="mapping network"):
        plain.decode(plain.initial_noise([0]), [0], mix_seed=1)


def test_interpolation_is_a_straight_line_in_w(gen):
    path = gen.interpolate(4, 5, steps=3)
    ends = gen.decode(gen.initial_noise([4, 5]), [4, 5])
    torch.testing.assert_close(path[0], ends[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(path[-1], ends[1], rtol=0, atol=1e-5)
    with torch.no_grad():
        w = gen.G.map(gen.initial_noise([4, 5]))
        middle = gen.G.synthesis(w.mean(0, keepdim=True)).clamp(-1, 1)
    torch.testing.assert_close(path[1], middle[0], rtol=0, atol=1e-5)


# ---- objectives ---------------------------------------------------------------------------


class LinearCritic(nn.Module):
    """D(x) = <w, x>: its gradient is w everywhere, so R1 and R2 are ||w||^2 for every sample."""

    def __init__(self, shape):
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape))

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


class FixedG(nn.Module):
    """G(z) = a fixed batch of images (for hand-computed losses)."""

    def __init__(self, images):
        super().__init__()
        self.images = nn.Parameter(images)

    def forward(self, z):
        return self.images[: z.shape[0]]


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_rpgan_terms_against_a_hand_computation():
    real, fake = torch.tensor([1.0, -2.0, 0.25]), torch.tensor([0.5, 3.0, 0.25])
    d = L.d_relativistic(real, fake)
    g = L.g_relativistic(fake, real)
    for i in range(3):
        assert d[i].item() == pytest.approx(softplus(-(real[i] - fake[i]).item()))
        assert g[i].item() == pytest.approx(softplus(-(fake[i] - real[i]).item()))
    assert d[2].item() == pytest.approx(math.log(2))   # equal scores: log 2 for both
    assert "rpgan" in L.OBJECTIVES


def test_rpgan_loss_in_both_phases_with_r1_and_r2_against_hand_computation():
    torch.manual_seed(0)
    shape = (3, 8, 8)
    real, fake = torch.randn(4, *shape), torch.randn(4, *shape)
    D, G = LinearCritic(shape), FixedG(fake.clone())
    gamma1, gamma2 = 0.3, 0.7
    loss = L.GanLoss("rpgan", z_dim=4, r1_gamma=gamma1, r2_gamma=gamma2)
    value, logs = loss("D", {"G": G, "D": D}, real)
    with torch.no_grad():
        sr, sf, norm2 = D(real), D(fake), D.w.square().sum()
    want = F.softplus(-(sr - sf)) + gamma1 / 2 * norm2 + gamma2 / 2 * norm2
    torch.testing.assert_close(value, want)
    torch.testing.assert_close(logs["r1"], norm2)
    torch.testing.assert_close(logs["r2"], norm2)
    value.mean().backward()                                                  # the penalties reach D's weights
    assert D.w.grad is not None and torch.isfinite(D.w.grad).all()
    # G's phase pairs each fake with a real image: it needs (and gets) the real batch.
    value, logs = loss("G", {"G": G, "D": D}, real)
    torch.testing.assert_close(value, F.softplus(-(sf - sr)))
    value.mean().backward()
    assert G.images.grad is not None and torch.count_nonzero(G.images.grad) > 0


def test_lazy_r1_regularises_every_nth_d_step_with_n_times_the_weight_and_resumes_its_count():
    torch.manual_seed(0)
    shape = (3, 8, 8)
    real, fake = torch.randn(4, *shape), torch.randn(4, *shape)
    D, G = LinearCritic(shape), FixedG(fake.clone())
    D.register_buffer("reg_clock", torch.zeros([], dtype=torch.long))     # as GanFamily.build adds it
    gamma, every = 0.3, 4
    lazy, eager = L.GanLoss("nonsaturating", z_dim=4, r1_gamma=gamma, r1_every=every), L.GanLoss("nonsaturating", z_dim=4)
    with torch.no_grad():
        plain = eager("D", {"G": G, "D": D}, real)[0]
        norm2 = D.w.square().sum()
    seen = []
    for call in range(6):
        value, logs = lazy("D", {"G": G, "D": D}, real)
        seen.append("r1" in logs)
        want = plain + (every * gamma / 2 * norm2 if call % every == 0 else 0)
        torch.testing.assert_close(value.detach(), want)
        if "r1" in logs:
            torch.testing.assert_close(logs["r1"], every * norm2)   # a log row's mean over its steps is R1's mean
    assert seen == [True, False, False, False, True, False] and D.reg_clock.item() == 6
    # A new process (a resumed run) reads the count from D: calls 6 and 7 are lazy, call 8 regularises.
    resumed = L.GanLoss("nonsaturating", z_dim=4, r1_gamma=gamma, r1_every=every)
    assert ["r1" in resumed("D", {"G": G, "D": D}, real)[1] for _ in range(3)] == [False, False, True] and D.reg_clock.item() == 9
    # The family gives D the buffer only when asked, so older checkpoints load as they are.
    assert "reg_clock" in dict(FAMILY.build({"model": {**STYLE, "r1_gamma": 1.0, "r1_every": 16}}, 32).nets["D"].named_buffers())
    assert "reg_clock" not in dict(FAMILY.build({"model": {**STYLE, "r1_gamma": 1.0}}, 32).nets["D"].named_buffers())


def test_r2_penalty_is_r1_at_the_fakes():
    torch.manual_seed(0)
    D = LinearCritic((3, 4, 4))
    fake = torch.randn(5, 3, 4, 4, requires_grad=True)
    torch.testing.assert_close(L.r2_penalty(D(fake), fake), D.w.detach().square().sum().expand(5))
    # A nonlinear D: ||grad D(x)||^2 per sample, as autograd gives it sample by sample.
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.Tanh(), nn.Linear(8, 1))
    r2 = L.r2_penalty(net(fake).squeeze(1), fake)
    for i in range(5):
        x = fake[i: i + 1].detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(net(x).sum(), x)
        assert r2[i].item() == pytest.approx(grad.square().sum().item(), rel=1e-5)


def test_path_length_of_a_linear_synthesis_is_closed_form():
    ws = torch.randn(3, 4, 16, requires_grad=True)                  # (N, num_ws, w_dim), w_dim = H * W
    gain = torch.tensor(2.0, requires_grad=True)                     # a weight of "G"
    images = gain * ws.sum(1).view(3, 1, 4, 4)                       # each layer's w moves the image by 2
    torch.manual_seed(5)
    lengths = L.path_lengths(images, ws)
    torch.manual_seed(5)
    y = torch.randn(3, 1, 4, 4) / 4                                  # the probe: N(0, I) / sqrt(H W)
    torch.testing.assert_close(lengths, 2 * y.flatten(1).norm(dim=1))
    torch.testing.assert_close(L.path_length_penalty(lengths, torch.tensor(0.5)), (lengths - 0.5) ** 2)
    (grad,) = torch.autograd.grad(lengths.sum(), gain)              # create_graph: the penalty reaches G's weights
    torch.testing.assert_close(grad, lengths.sum() / 2)


def test_style_g_phase_mixes_styles_and_regularises_path_length():
    torch.manual_seed(0)
    G, D = StyleGenerator(16, **TINY).train(), StyleDiscriminator(16, channels=8, max_channels=16)
    seen = []
    G.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs), with_kwargs=True)
    loss = L.GanLoss("nonsaturating", z_dim=16, num_ws=G.num_ws, style_mixing=1.0, pl_weight=2.0)
    value, logs = loss("G", {"G": G, "D": D}, torch.randn(4, 3, 16, 16))
    layers = seen[-1]["mix_layer"]
    assert seen[-1]["mix_z"].shape == (4, 16) and ((layers >= 1) & (layers < G.num_ws)).all()   # every fake mixed (p = 1)
    assert "pl_length" in logs and G.pl_mean.item() == pytest.approx(0.01 * logs["pl_length"].item(), rel=1e-5)
    value.mean().backward()                                          # a gradient of a gradient through G
    assert G.mapping[0].weight.grad is not None and torch.isfinite(G.mapping[0].weight.grad).all()
    loss = L.GanLoss("nonsaturating", z_dim=16, num_ws=G.num_ws, style_mixing=0.0)
    loss("D", {"G": G, "D": D}, torch.randn(4, 3, 16, 16))
    assert "mix_z" not in seen[-1]                                   # no mixing asked: G gets plain z
    with pytest.raises(ValueError, match="style generator"):
        L.GanLoss(z_dim=16, pl_weight=1.0)


def test_phases_that_differentiate_a_gradient_are_not_compiled():
    def phases(**model):
        return {p.name: p.compilable for p in FAMILY.build({"model": {**STYLE, **model}}, 32).phases}

    assert phases() == {"D": True, "G": True}
    assert phases(r1_gamma=1.0) == {"D": False, "G": True} == phases(r2_gamma=1.0)
    assert phases(pl_weight=2.0) == {"D": True, "G": False}
    built = FAMILY.build({"model": {**STYLE, "objective": "rpgan", "style_mixing": 0.5}}, 32)
    assert built.loss.objective == "rpgan" and built.loss.num_ws == built.nets["G"].num_ws == 8 and built.loss.style_mixing == 0.5


# ---- config and export -----------------------------------------------------------------


def test_export_records_the_style_generator_and_reloads_w_avg(tmp_path):
    cfg = {"name": "style", "model": {**STYLE, "w_dim": 12, "mapping_layers": 3}}
    built = FAMILY.build(cfg, 32)
    trained_looking(built.nets["G"])
    FAMILY.export(built, cfg, tmp_path)
    meta = json.loads((tmp_path / "facegen.json").read_text())["generator"]
    assert meta["arch"] == "style" and meta["w_dim"] == 12 and meta["mapping_layers"] == 3
    saved = load_file(tmp_path / "generator.safetensors")
    assert torch.equal(saved["w_avg"], built.nets["G"].w_avg) and saved["w_avg"].abs().sum() > 0
    gen = FAMILY.load_generator(tmp_path)
    assert gen.mapped and torch.equal(gen.G.w_avg, built.nets["G"].w_avg)
    want = GanGenerator(built.nets["G"], "style", 32)
    z = gen.initial_noise([3, 4])
    assert torch.equal(gen.decode(z, psi=0.6), want.decode(z, psi=0.6))
    # The dcgan export is unchanged: no style keys in its facegen.json.
    cfg = {"name": "old", "model": {"z_dim": 16, "g_channels": 32, "g_min_channels": 8, "d_channels": 8}}
    FAMILY.export(FAMILY.build(cfg, 32), cfg, tmp_path / "dcgan")
    assert set(json.loads((tmp_path / "dcgan" / "facegen.json").read_text())["generator"]) == {
        "arch", "resolution", "z_dim", "channels", "min_channels", "norm", "output"}


@pytest.mark.parametrize("model, resolution, message", [
    ({}, 48, "gan config: style G resolution 48 unsupported: use a power of two"),
    ({"g_arch": "dcgan", "g_norm": "batch", "g_output": "tanh"}, 48, "gan config: style D resolution 48 unsupported"),
    ({"g_norm": "batch"}, 32, "gan config: the style G has no norm layers (its convolutions demodulate): set model.g_norm=none"),
    ({"d_norm": "layer"}, 32, "gan config: the style D has no norm layers: set model.d_norm=none"),
    ({"spectral_norm": True}, 32, "set model.spectral_norm=false"),
    ({"g_output": "relu"}, 32, "unknown output 'relu'"),
    ({"objective": "relativistic"}, 32, "unknown GAN objective 'relativistic'"),
])
def test_bad_style_builds_are_one_line_errors(model, resolution, message):
    with pytest.raises(FacegenError) as refused:
        FAMILY.build({"model": {**STYLE, **model}}, resolution)
    assert message in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("overrides, message", [
    (["model.style_mixing=0.9"], "model.style_mixing is an option of the style generator: set model.g_arch=style"),
    (["model.pl_weight=2"], "model.pl_weight is an option of the style generator"),
    (["model.g_arch=style", "model.l2_lambda=0.1"], "model.l2_lambda weighs plain conv/linear weights"),
    (["model.style_mixing=1.5"], "model.style_mixing must be a number in [0, 1], got 1.5"),
    (["model.r2_gamma=-1"], "model.r2_gamma must be a number >= 0, got -1"),
    (["model.pl_weight=-0.5"], "model.pl_weight must be a number >= 0"),
    (["model.mapping_layers=0"], "model.mapping_layers must be a positive integer, got 0"),
    (["model.w_dim=2.5"], "model.w_dim must be a positive integer or null, got 2.5"),
    (["model.r1_every=0"], "model.r1_every must be a positive integer, got 0"),
    (["model.r1_every=16"], "model.r1_every=16 spaces out R1/R2, but both are off: set model.r1_gamma"),
])
def test_bad_config_values_are_one_line_errors(overrides, message):
    with pytest.raises(FacegenError) as refused:
        load_config("dcgan-tiny32", overrides)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_presets_resolve():
    tiny, r3 = load_config("stylegan-tiny32"), load_config("stylegan-r3gan-tiny32")
    assert tiny["model"]["g_arch"] == tiny["model"]["d_arch"] == "style" and tiny["model"]["objective"] == "nonsaturating"
    assert r3["model"]["objective"] == "rpgan" and r3["model"]["r1_gamma"] == r3["model"]["r2_gamma"] > 0
    assert tiny["model"]["r1_every"] == 16 and r3["model"]["r1_every"] == 1       # StyleGAN2's lazy R1; R3GAN's every step
    assert {k: v for k, v in r3["model"].items() if k not in ("objective", "r2_gamma", "r1_every")} == \
        {k: v for k, v in tiny["model"].items() if k not in ("objective", "r2_gamma", "r1_every")}      # the same nets
    for name, size in (("stylegan-ffhq64-gpu", 64), ("stylegan-ffhq128-gpu", 128)):
        cfg = load_config(name)
        assert cfg["resolution"] == size and cfg["mixed_precision"] == "auto" and cfg["model"]["mapping_layers"] == 8


# ---- the presets end to end --------------------------------------------------------------

# Narrow nets and few images per step; the r3gan run also mixes styles and regularises path
# length, so their randomness and the pl_mean buffer must resume exactly too; the other runs
# lazy R1 every 2nd D step, so the resumed step 3 regularises only if D's reg_clock came back.
FAST = ["model.g_channels=32", "model.g_min_channels=8", "model.d_channels=8", "model.d_max_channels=32", "model.z_dim=16",
        "model.w_dim=null", "batch_size=8", "log_every=1", "tensorboard=false", "sample_seeds=0-3", "sample_every=100",
        "checkpoint_every=2", "threads=1"]
EXTRA = {"stylegan-tiny32": ["model.r1_every=2"], "stylegan-r3gan-tiny32": ["model.style_mixing=0.5", "model.pl_weight=2"]}


def weights(checkpoint, net):
    return load_file(checkpoint / "nets" / f"{net}.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(EXTRA))
def test_preset_trains_resumes_exactly_exports_and_samples(preset, celeba_store32, tmp_path):
    from facegen.checkpoint import latest_checkpoint
    from facegen.sample import generate, load_generator
    from facegen.train import train

    whole, split = tmp_path / "whole", tmp_path / "split"
    fast = FAST + EXTRA[preset]
    train(preset, celeba_store32.path, whole, fast, steps=3)
    train(preset, celeba_store32.path, split, fast, steps=2)
    train(preset, celeba_store32.path, split, [], steps=3, resume=True)

    # Both nets (buffers included: w_avg, pl_mean, the fixed noise) and the EMA follow the unbroken run.
    a, b = latest_checkpoint(whole / "checkpoints"), latest_checkpoint(split / "checkpoints")
    for net in ("G", "D"):
        for key, value in weights(a, net).items():
            torch.testing.assert_close(weights(b, net)[key], value, rtol=0, atol=1e-6, msg=f"{net}.{key}")
    g = weights(b, "G")
    assert g["w_avg"].abs().sum() > 0 and ("pl_mean" in g) and (g["pl_mean"].item() > 0) == (preset == "stylegan-r3gan-tiny32")
    ema_a, ema_b = (torch.load(c / "ema" / "G.pt", weights_only=True) for c in (a, b))
    for x, y in zip(ema_a["shadow_params"], ema_b["shadow_params"]):
        torch.testing.assert_close(y, x, rtol=0, atol=1e-6)
    row = json.loads((split / "metrics.jsonl").read_text().splitlines()[-1])
    assert all(math.isfinite(row[k]) for k in ("loss_D", "loss_G", "r1"))
    assert ("r2" in row and "pl_length" in row) == (preset == "stylegan-r3gan-tiny32")

    # The export: the EMA G with the trained w_avg, rebuilt from facegen.json by facegen.sample.
    assert sorted(p.name for p in (split / "model").iterdir()) == ["facegen.json", "generator.safetensors"]
    assert torch.equal(load_file(split / "model" / "generator.safetensors")["w_avg"], g["w_avg"])
    gen = load_generator(split, device="cpu")
    assert gen.mapped and gen.resolution == 32 and torch.equal(gen.G.w_avg, g["w_avg"])
    faces = generate(gen, [0, 1, 2], batch_size=3, psi=0.7)
    assert faces.shape == (3, 32, 32, 3) and faces.dtype == np.uint8
    # A seed's face whatever its batch (to within one grey level across batch shapes on CPU: docs/DESIGN.md).
    assert np.abs(generate(gen, [2], psi=0.7)[0].astype(int) - faces[2]).max() <= 1
    one, many = gen.decode(gen.initial_noise([2]), [2], psi=0.7), gen.decode(gen.initial_noise([0, 1, 2]), [0, 1, 2], psi=0.7)
    torch.testing.assert_close(one[0], many[2], rtol=0, atol=1e-5)
    assert not np.array_equal(generate(gen, [0, 1, 2], batch_size=3), faces)  # psi changes the faces


def test_mix_seed_flag_mixes_styles_and_is_refused_without_a_mapping_network(tmp_path, facegen):
    """`facegen sample --mix-seed B`: seed A's coarse styles with B's fine ones; a model without w refuses it in one line."""
    from PIL import Image

    from facegen.sample import generate, load_generator

    cfg = {"name": "style", "model": {**STYLE}}
    built = FAMILY.build(cfg, 32)
    trained_looking(built.nets["G"])
    FAMILY.export(built, cfg, tmp_path / "style" / "model")
    run = tmp_path / "style"
    result = facegen("sample", str(run), "--seeds", "3,4", "--out", str(tmp_path / "mixed"), "--mix-seed", "9")
    assert result.returncode == 0, result.stderr
    gen = load_generator(run)
    mixed = np.array(Image.open(tmp_path / "mixed" / "seed000003.png"))
    np.testing.assert_allclose(mixed.astype(int), generate(gen, [3], mix_seed=9)[0].astype(int), atol=1)
    assert np.abs(mixed.astype(int) - generate(gen, [3])[0].astype(int)).max() > 0  # not the plain face
    dcgan = {"name": "old", "model": {"z_dim": 16, "g_channels": 32, "g_min_channels": 8, "d_channels": 8}}
    FAMILY.export(FAMILY.build(dcgan, 32), dcgan, tmp_path / "dcgan" / "model")
    refused = facegen("sample", str(tmp_path / "dcgan"), "--n", "1", "--out", str(tmp_path / "x"), "--mix-seed", "9")
    assert refused.returncode == 2 and "--mix-seed: style mixing needs a GAN with a mapping network" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
