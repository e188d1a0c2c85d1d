"""Autoencoder objective of latent diffusion (Rombach et al. 2022; taming-transformers'
LPIPSWithDiscriminator): L1 + perceptual + small KL, plus a hinge patch-GAN term switched
on after `disc_start` steps and weighted adaptively against the reconstruction loss.

Phases: "main" trains the autoencoder, "D" the discriminator. The step count lives in the
autoencoder's `steps` buffer (checkpointed with it), so a resumed run switches the
discriminator on at exactly the same step.
"""

from __future__ import annotations

import torch
from torch import nn


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Per-sample hinge loss of the discriminator (taming `hinge_d_loss`)."""
    return 0.5 * (torch.relu(1 - logits_real).mean((1, 2, 3)) + torch.relu(1 + logits_fake).mean((1, 2, 3)))


def feature_matching(feats_real: list[torch.Tensor], feats_fake: list[torch.Tensor]) -> torch.Tensor:
    """Per-sample L1 between discriminator activations (pix2pixHD's feature matching loss)."""
    return sum((r.detach() - f).abs().mean((1, 2, 3)) for r, f in zip(feats_real, feats_fake)) / len(feats_real)


def adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """taming's calculate_adaptive_weight: balance the GAN gradient against the reconstruction one
    at the decoder's last layer, ||grad nll|| / ||grad g||, clamped to [0, 1e4]."""
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()


class AutoencoderLoss:
    def __init__(
        self,
        kl_weight: float = 1e-6,          # taming's weight, relative to the pixel-summed reconstruction loss
        perceptual_weight: float = 1.0,   # LPIPS (or feature-matching) weight
        disc_weight: float = 0.5,         # multiplies the adaptive GAN weight
        disc_start: int = 50001,          # training step at which the GAN term and the D phase switch on
        lpips: nn.Module | None = None,   # frozen LPIPS; None = discriminator feature matching
    ):
        self.kl_weight, self.perceptual_weight = kl_weight, perceptual_weight
        self.disc_weight, self.disc_start, self.lpips = disc_weight, disc_start, lpips

    def disc_on(self, nets: dict[str, nn.Module]) -> bool:
        # Feature matching needs a discriminator that has learnt something, so it trains from step 0.
        return self.lpips is None or int(_unwrap(nets["vae"]).steps) >= self.disc_start

    def __call__(self, phase: str, nets: dict[str, nn.Module], images: torch.Tensor):
        vae, disc = nets["vae"], nets["disc"]
        if phase == "D":
            if not self.disc_on(nets):  # a no-op phase: no gradient reaches the discriminator
                return images.new_zeros(len(images), requires_grad=True), {"loss_D": 0.0}
            with torch.no_grad():
                recon, _ = vae(images)
            loss = hinge_d_loss(disc(images), disc(recon))
            return loss, {"loss_D": loss.mean().item()}

        # Reconstruction: per-pixel L1 + perceptual + KL scaled to the same per-pixel units.
        recon, posterior = vae(images)  # (b, 3, h, w), latent distribution
        use_gan = int(_unwrap(vae).steps) >= self.disc_start
        l1 = (images - recon).abs().mean((1, 2, 3))
        if self.lpips is not None:
            perceptual = self.lpips(images, recon).flatten()
            logits_fake = disc(recon) if use_gan else None
        else:
            logits_fake, feats_fake = disc(recon, features=True)
            perceptual = feature_matching(disc(images, features=True)[1], feats_fake)
        kl = posterior.kl() / images[0].numel()  # (b,): summed over the latent, per image pixel
        nll = l1 + self.perceptual_weight * perceptual
        loss = nll + self.kl_weight * kl
        logs = {"l1": l1.mean().item(), "perceptual": perceptual.mean().item(), "kl": kl.mean().item()}

        # Adversarial term after disc_start, weighted so its gradient matches the reconstruction's.
        if use_gan:
            g_loss = -logits_fake.mean((1, 2, 3))
            weight = self.disc_weight * adaptive_weight(nll.mean(), g_loss.mean(), _unwrap(vae).last_layer())
            loss = loss + weight * g_loss
            logs.update(loss_G=g_loss.mean().item(), d_weight=weight.item())
        return loss, logs


def _unwrap(net: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (accelerate.prepare) or itself."""
    return getattr(net, "module", net)
