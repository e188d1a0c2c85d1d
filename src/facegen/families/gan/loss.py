"""GAN objectives: pure per-sample terms, composed by one `GanLoss` per config (STYLE G3).

Scores are raw discriminator outputs (b,). Every term returns a per-sample tensor (b,)
except the weight penalty, which is one number for a whole net.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

OBJECTIVES = ("nonsaturating", "wgan", "hinge")


def d_nonsaturating(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))) (Goodfellow et al. 2014), via softplus."""
    return F.softplus(-real) + F.softplus(fake)


def g_nonsaturating(fake: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(G(z))): the non-saturating generator loss."""
    return F.softplus(-fake)


def wgan_critic(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """D(G(z)) - D(x): minus the Wasserstein-1 estimate (Arjovsky et al. 2017)."""
    return fake - real


def wgan_generator(fake: torch.Tensor) -> torch.Tensor:
    """-D(G(z)); also the generator side of the hinge loss."""
    return -fake


def hinge_critic(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """max(0, 1 - D(x)) + max(0, 1 + D(G(z))) (Lim & Ye 2017; Miyato et al. 2018)."""
    return F.relu(1 - real) + F.relu(1 + fake)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """(||grad D(x_hat)|| - 1)^2 at random points between real and fake (Gulrajani et al. 2017, Alg. 1)."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1) ** 2


def r1_penalty(real_score: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """||grad D(x)||^2 on real images (Mescheder et al. 2018); the caller scales it by gamma/2.

    `real` must require grad and `real_score` be D(real), so the D forward is shared."""
    (grad,) = torch.autograd.grad(real_score.sum(), real, create_graph=True)
    return grad.flatten(1).pow(2).sum(dim=1)


def l2_weights(net: nn.Module) -> torch.Tensor:
    """Sum of squared conv/linear weights (biases and norm scales excluded), as Keras' l2(lambda)."""
    return sum(m.weight.pow(2).sum() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def clip_weights(net: nn.Module, clip: float) -> Callable[[], None]:
    """WGAN's Lipschitz constraint: after each critic step, clamp every parameter to [-clip, clip]."""

    @torch.no_grad()
    def after_step() -> None:
        for p in net.parameters():
            p.clamp_(-clip, clip)

    return after_step


class GanLoss:
    """One phase's loss: "D" trains the discriminator/critic, "G" the generator."""

    def __init__(
        self,
        objective: str = "nonsaturating",  # "nonsaturating", "wgan" or "hinge"
        z_dim: int = 200,                 # latent length, as the generator's
        gp_lambda: float = 0.0,           # gradient-penalty weight (WGAN-GP: 10); 0 = off
        r1_gamma: float = 0.0,            # R1 weight gamma (loss += gamma/2 * R1); 0 = off
        l2_lambda: float = 0.0,           # L2 weight penalty on the phase's net (0.02); 0 = off
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,  # DiffAugment, applied to every D input
    ):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown GAN objective {objective!r}; use one of {OBJECTIVES}")
        self.objective, self.z_dim = objective, z_dim
        self.gp_lambda, self.r1_gamma, self.l2_lambda = gp_lambda, r1_gamma, l2_lambda
        self.augment = augment or (lambda x: x)

    def __call__(self, phase: str, nets: dict[str, nn.Module], images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        G, D = nets["G"], nets["D"]
        z = torch.randn(images.shape[0], self.z_dim, device=images.device)
        if phase == "G":
            fake_score = D(self.augment(G(z)))
            loss = wgan_generator(fake_score) if self.objective != "nonsaturating" else g_nonsaturating(fake_score)
            return self._with_l2(loss, G, logs := {}, "G"), logs
        with torch.no_grad():
            fake = G(z)
        images = images.detach().requires_grad_(self.r1_gamma > 0)   # R1 differentiates D(x) by x
        real_score, fake_score = D(self.augment(images)), D(self.augment(fake))
        loss = {"nonsaturating": d_nonsaturating, "wgan": wgan_critic, "hinge": hinge_critic}[self.objective](real_score, fake_score)
        # The loop logs the total as loss_D; the mean scores show the balance (for WGAN,
        # score_real - score_fake is the Wasserstein estimate). Tensors: no sync per step; the
        # divergence bound (model.diverge_above) is the loop's Phase.loss_bound, checked at log steps.
        logs = {"score_real": real_score.detach().mean(), "score_fake": fake_score.detach().mean()}
        if self.gp_lambda:
            gp = gradient_penalty(D, images, fake)
            loss, logs["gp"] = loss + self.gp_lambda * gp, gp.detach().mean()
        if self.r1_gamma:
            r1 = r1_penalty(real_score, images)
            loss, logs["r1"] = loss + self.r1_gamma / 2 * r1, r1.detach().mean()
        return self._with_l2(loss, D, logs, "D"), logs

    def _with_l2(self, loss: torch.Tensor, net: nn.Module, logs: dict, name: str) -> torch.Tensor:
        if not self.l2_lambda:
            return loss
        l2 = l2_weights(net)
        logs[f"l2_{name}"] = l2.detach()
        return loss + self.l2_lambda * l2     # the same scalar for every sample, so the mean adds it once
