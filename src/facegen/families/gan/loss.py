"""GAN objectives: pure per-sample terms, composed by one `GanLoss` per config (STYLE G3).

Scores are raw discriminator outputs (b,). Every term returns a per-sample tensor (b,)
except the weight penalty, which is one number for a whole net.

The style generator (g_arch "style") adds two G-phase options: style mixing (a fraction of
fakes take a second z's w from a random layer on, in both phases, as StyleGAN2 draws its fakes)
and path-length regularisation. "rpgan" is R3GAN's relativistic pairing loss, whose G phase
scores real images too; R3GAN pairs it with R1 and R2 of equal gamma.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

OBJECTIVES = ("nonsaturating", "wgan", "hinge", "rpgan")


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


def d_relativistic(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """softplus(-(D(x) - D(G(z)))), real i paired with fake i: the relativistic pairing GAN
    (Jolicoeur-Martineau 2019) that R3GAN (Huang et al. 2024) regularises with R1 + R2."""
    return F.softplus(fake - real)


def g_relativistic(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """softplus(-(D(G(z)) - D(x))): the same pairing with the roles swapped (R3GAN's G loss)."""
    return F.softplus(real - fake)


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


def r2_penalty(fake_score: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """||grad D(x)||^2 on generated images (Roth et al. 2017; R3GAN's R2): R1's formula at the
    fakes, so D is smooth on both distributions. `fake` must require grad, `fake_score` = D(fake)."""
    return r1_penalty(fake_score, fake)


def path_lengths(images: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    """||J_w^T y|| per sample, y ~ N(0, I) / sqrt(H W) (StyleGAN2 sec. 3.2): how far the image
    moves for a unit step in w. Kept differentiable (create_graph), for the penalty's gradient.
    `ws` (N, num_ws, w_dim) must be what made `images`; the norm is over w_dim, averaged over layers."""
    y = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (grad,) = torch.autograd.grad((images * y).sum(), ws, create_graph=True)
    return grad.square().sum(dim=2).mean(dim=1).sqrt()


def path_length_penalty(lengths: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(||J_w^T y|| - a)^2, a the running mean of the lengths: a fixed-size step in w should
    change the image by a fixed amount, whatever the w (StyleGAN2 eq. 4)."""
    return (lengths - target).square()


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
        objective: str = "nonsaturating",  # "nonsaturating", "wgan", "hinge" or "rpgan"
        z_dim: int = 200,                 # latent length, as the generator's
        gp_lambda: float = 0.0,           # gradient-penalty weight (WGAN-GP: 10); 0 = off
        r1_gamma: float = 0.0,            # R1 weight gamma (loss += gamma/2 * R1); 0 = off
        l2_lambda: float = 0.0,           # L2 weight penalty on the phase's net (0.02); 0 = off
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,  # DiffAugment, applied to every D input
        r2_gamma: float = 0.0,            # R2 weight (loss += gamma/2 * R2, on fakes); 0 = off
        num_ws: int = 0,                  # the style G's number of ws; 0 = a G without mapping network
        style_mixing: float = 0.0,        # style G: probability that a fake mixes two z's w
        pl_weight: float = 0.0,           # style G: path-length penalty weight (StyleGAN2: 2); 0 = off
        pl_decay: float = 0.01,           # how fast the path-length target follows the lengths
        r1_every: int = 1,                # lazy regularisation: R1/R2 every N-th D step, weighted by N
    ):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown GAN objective {objective!r}; use one of {OBJECTIVES}")
        if (style_mixing or pl_weight) and not num_ws:
            raise ValueError("style mixing and path-length regularisation need the style generator (model.g_arch=style)")
        self.objective, self.z_dim = objective, z_dim
        self.gp_lambda, self.r1_gamma, self.r2_gamma, self.l2_lambda = gp_lambda, r1_gamma, r2_gamma, l2_lambda
        self.num_ws, self.style_mixing, self.pl_weight, self.pl_decay = num_ws, style_mixing, pl_weight, pl_decay
        self.augment = augment or (lambda x: x)
        if r1_every < 1:
            raise ValueError(f"r1_every must be >= 1, got {r1_every}")
        self.r1_every, self._clock = r1_every, None

    def regularise_now(self, D: nn.Module) -> bool:
        """Whether this D step computes R1/R2 (StyleGAN2's lazy regularisation: every r1_every-th
        step, its weight times r1_every, so the penalty's average pull is unchanged at a fraction
        of the double backwards). The count lives in D's `reg_clock` buffer, read once per
        process: a resumed run regularises at the same steps as an unbroken one."""
        if self.r1_every == 1:
            return True
        clock = getattr(D, "module", D).reg_clock
        if self._clock is None:
            self._clock = int(clock)
        now = self._clock % self.r1_every == 0
        self._clock += 1
        clock.add_(1)
        return now

    def fakes(self, G: nn.Module, z: torch.Tensor, return_ws: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """G's images of z, and the ws that made them when asked (a style G only). With style
        mixing, each sample takes a second z's w from a random layer on with probability
        `style_mixing` (StyleGAN2's mixing regularisation). Everything goes through G's forward,
        which is what a distributed wrapper (DDP) sees."""
        if not self.num_ws:
            return G(z), None
        mix = {}
        if self.style_mixing:
            b = z.shape[0]
            layer = torch.randint(1, self.num_ws, (b,), device=z.device)
            mixed = torch.rand(b, device=z.device) < self.style_mixing
            mix = {"mix_z": torch.randn_like(z), "mix_layer": torch.where(mixed, layer, self.num_ws)}  # num_ws: not mixed
        out = G(z, return_ws=return_ws, **mix)
        return out if return_ws else (out, None)

    def __call__(self, phase: str, nets: dict[str, nn.Module], images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        G, D = nets["G"], nets["D"]
        z = torch.randn(images.shape[0], self.z_dim, device=images.device)
        if phase == "G":
            fake, ws = self.fakes(G, z, return_ws=self.pl_weight > 0)
            fake_score = D(self.augment(fake))
            logs = {}
            if self.objective == "rpgan":  # relativistic: G's loss compares with real scores (no gradient to take there)
                with torch.no_grad():
                    real_score = D(self.augment(images))
                loss = g_relativistic(fake_score, real_score)
            else:
                loss = wgan_generator(fake_score) if self.objective != "nonsaturating" else g_nonsaturating(fake_score)
            if self.pl_weight:
                lengths = path_lengths(fake, ws)
                # The target lives on G (a buffer) so that checkpoints, and so exact resumes, carry it.
                target = getattr(G, "module", G).pl_mean          # (DDP wraps G in .module)
                target.copy_(target.lerp(lengths.detach().mean(), self.pl_decay))
                loss = loss + self.pl_weight * path_length_penalty(lengths, target)
                logs["pl_length"] = lengths.detach().mean()
            return self._with_l2(loss, G, logs, "G"), logs
        with torch.no_grad():
            fake = self.fakes(G, z)[0]
        regularise = (self.r1_gamma or self.r2_gamma) and self.regularise_now(D)
        r1_gamma, r2_gamma = (self.r1_gamma * self.r1_every, self.r2_gamma * self.r1_every) if regularise else (0, 0)
        images = images.detach().requires_grad_(r1_gamma > 0)   # R1 differentiates D(x) by x
        fake = fake.requires_grad_(r2_gamma > 0)                # and R2 D(G(z)) by G(z)
        real_score, fake_score = D(self.augment(images)), D(self.augment(fake))
        loss = {"nonsaturating": d_nonsaturating, "wgan": wgan_critic, "hinge": hinge_critic,
                "rpgan": d_relativistic}[self.objective](real_score, fake_score)
        # The loop logs the total as loss_D; the mean scores show the balance (for WGAN,
        # score_real - score_fake is the Wasserstein estimate). Tensors: no sync per step; the
        # divergence bound (model.diverge_above) is the loop's Phase.loss_bound, checked at log steps.
        logs = {"score_real": real_score.detach().mean(), "score_fake": fake_score.detach().mean()}
        if self.gp_lambda:
            gp = gradient_penalty(D, images, fake)
            loss, logs["gp"] = loss + self.gp_lambda * gp, gp.detach().mean()
        # Lazy steps log r1/r2 times r1_every, so a log row's average over its steps is the penalty's mean.
        if r1_gamma:
            r1 = r1_penalty(real_score, images)
            loss, logs["r1"] = loss + r1_gamma / 2 * r1, r1.detach().mean() * self.r1_every
        if r2_gamma:
            r2 = r2_penalty(fake_score, fake)
            loss, logs["r2"] = loss + r2_gamma / 2 * r2, r2.detach().mean() * self.r1_every
        return self._with_l2(loss, D, logs, "D"), logs

    def _with_l2(self, loss: torch.Tensor, net: nn.Module, logs: dict, name: str) -> torch.Tensor:
        if not self.l2_lambda:
            return loss
        l2 = l2_weights(net)
        logs[f"l2_{name}"] = l2.detach()
        return loss + self.l2_lambda * l2     # the same scalar for every sample, so the mean adds it once
