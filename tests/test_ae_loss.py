"""The autoencoder's loss terms alone, and the discriminator switch-on (no training loop)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facegen.families.ae.loss import AutoencoderLoss, adaptive_weight, feature_matching, hinge_d_loss
from facegen.families.ae.networks import KLAutoencoder, PatchDiscriminator, make_autoencoder
from facegen.utils import FacegenError


def test_hinge_d_loss_closed_form():
    real, fake = torch.full((2, 1, 3, 3), 2.0), torch.full((2, 1, 3, 3), -0.5)
    assert torch.allclose(hinge_d_loss(real, fake), torch.tensor([0.25, 0.25]))  # 0.5 * (relu(1-2) + relu(1-0.5))
    assert hinge_d_loss(real, -real).eq(0).all()  # confident and right: no loss


def test_feature_matching_is_zero_for_equal_features_and_positive_otherwise():
    a = [torch.randn(3, 4, 5, 5), torch.randn(3, 8, 2, 2)]
    assert feature_matching(a, a).eq(0).all() and feature_matching(a, [x + 1 for x in a]).allclose(torch.ones(3))


def test_adaptive_weight_is_the_gradient_norm_ratio():
    w = torch.randn(4, requires_grad=True)
    nll, g = (3 * w).sum(), (0.5 * w).sum()  # gradients 3 and 0.5 per element: ratio 6
    assert adaptive_weight(nll, g, w).item() == pytest.approx(6.0, rel=1e-3)


class L1Perceptual(nn.Module):  # stands in for LPIPS: (b, 3, h, w) x2 -> (b, 1, 1, 1)
    def forward(self, a, b):
        return (a - b).abs().mean((1, 2, 3), keepdim=True)


def test_discriminator_switches_on_at_disc_start():
    torch.manual_seed(0)
    vae = KLAutoencoder(make_autoencoder(16, 4, (8, 8, 8), 3, 1, 4))
    nets = {"vae": vae, "disc": PatchDiscriminator(8, 1)}
    loss = AutoencoderLoss(disc_start=1, lpips=L1Perceptual())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    d, logs = loss("D", nets, x)
    assert d.eq(0).all() and logs["loss_D"] == 0  # before disc_start: a no-op phase
    main, logs = loss("main", nets, x)
    assert main.shape == (2,) and "loss_G" not in logs
    vae.steps += 1  # what the D phase's after_step does
    d, logs = loss("D", nets, x)
    assert d.shape == (2,) and logs["loss_D"] > 0
    main, logs = loss("main", nets, x)
    assert logs["loss_G"] != 0 and logs["d_weight"] >= 0


def test_bad_autoencoder_shapes_are_user_errors():
    with pytest.raises(FacegenError, match="downsample=8 needs 4 entries"):
        make_autoencoder(64, 8, (16, 32, 32))
    with pytest.raises(FacegenError, match="not a multiple"):
        make_autoencoder(66, 4, (16, 32, 32))


def test_lpips_required_but_missing_is_a_user_error():
    try:
        import lpips  # noqa: F401

        pytest.skip("lpips is installed here")
    except ImportError:
        pass
    from facegen.families.ae.perceptual import load_lpips

    with pytest.raises(FacegenError, match="model.perceptual=features"):
        load_lpips(required=True)
    with pytest.warns(UserWarning, match="feature matching"):
        assert load_lpips() is None
