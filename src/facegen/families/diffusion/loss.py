"""The one denoising loss of ddpm, ldm and sd: optionally encode the batch to latents, corrupt
it by the objective's noise, optionally condition on the prompt, and weight the error.

    DDPM (Ho et al. 2020, Algorithm 1): t ~ U{0..T-1}, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,
        loss = w(t) || target - unet(x_t, t) ||^2, target eps or v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0
        (Salimans & Ho 2022); w = 1, or min-SNR-gamma (Hang et al. 2023): min(SNR, gamma) / SNR
        for eps and / (SNR + 1) for v.
    EDM (Karras et al. 2022, eq. 8): ln sigma ~ N(P_mean, P_std^2), D = c_skip x + c_out F(c_in x, c_noise)
        on x = x_0 + sigma n, loss = lambda(sigma) || D - x_0 ||^2 with lambda = (sigma^2 + s_d^2) / (sigma s_d)^2.

Random numbers are drawn in a fixed order (posterior, noise, t or sigma, prompt dropout) from
torch's global stream, so a resumed run draws exactly what an unbroken one would.
"""

from __future__ import annotations

import torch
from torch import nn

from facegen.families.diffusion.edm import precondition


class DdpmObjective:
    """The discrete variance-preserving process of a DDPMScheduler; epsilon or v target."""

    def __init__(self, scheduler, snr_gamma: float | None = None):
        self.scheduler, self.snr_gamma = scheduler, snr_gamma
        self.v_target = scheduler.config.prediction_type == "v_prediction"
        alphas_cumprod = scheduler.alphas_cumprod
        self.snr = alphas_cumprod / (1 - alphas_cumprod)  # (T,)

    def corrupt(self, x_0: torch.Tensor):
        """-> (network input, network time, what the error needs)."""
        epsilon = torch.randn_like(x_0)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(x_0),), device=x_0.device)
        return self.scheduler.add_noise(x_0, epsilon, t), t, (x_0, epsilon, t)

    def error(self, output: torch.Tensor, saved) -> torch.Tensor:
        x_0, epsilon, t = saved
        target = self.scheduler.get_velocity(x_0, epsilon, t) if self.v_target else epsilon
        loss = (output.float() - target.float()).square().mean(dim=(1, 2, 3))  # (b,)
        if self.snr_gamma is not None:
            snr = self.snr.to(x_0.device)[t]
            loss = loss * snr.clamp(max=self.snr_gamma) / (snr + 1 if self.v_target else snr)
        return loss


class EdmObjective:
    """EDM's log-normal noise levels, preconditioning and loss weighting."""

    def __init__(self, sigma_data: float = 0.5, p_mean: float = -1.2, p_std: float = 1.2):
        self.sigma_data, self.p_mean, self.p_std = sigma_data, p_mean, p_std

    def corrupt(self, x_0: torch.Tensor):
        sigma = (torch.randn(len(x_0), device=x_0.device) * self.p_std + self.p_mean).exp()
        x = x_0 + torch.randn_like(x_0) * sigma.view(-1, 1, 1, 1)
        c_skip, c_out, c_in, c_noise = (c.view(-1, 1, 1, 1) for c in precondition(sigma, self.sigma_data))
        return c_in * x, c_noise.flatten(), (x_0, x, sigma, c_skip, c_out)

    def error(self, output: torch.Tensor, saved) -> torch.Tensor:
        x_0, x, sigma, c_skip, c_out = saved
        denoised = c_skip * x + c_out * output.float()
        weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        return weight * (denoised - x_0.float()).square().mean(dim=(1, 2, 3))


class Latents:
    """Faces -> a sample of a frozen VAE's posterior q(z | x) (Rombach et al. 2022, eq. 2), scaled to
    about unit variance; with a latent cache the batches are already the posterior's moments."""

    def __init__(self, vae: nn.Module, inputs: str = "images"):
        self.vae, self.inputs = vae, inputs  # inputs: "images" in [-1, 1], or "moments" (b, 2c, h/f, w/f)

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        if self.inputs == "moments":
            posterior = DiagonalGaussianDistribution(batch.float())
        else:  # the VAE sees its own dtype (a bf16 copy on GPU)
            posterior = self.vae.encode(batch.to(next(self.vae.parameters()).dtype)).latent_dist
        return posterior.sample().float() * self.vae.config.scaling_factor


class Prompts:
    """One fixed prompt's text embedding, replaced by the empty prompt's with probability `dropout`,
    which keeps the unconditional prediction classifier-free guidance needs."""

    def __init__(self, prompt_embedding: torch.Tensor, empty_embedding: torch.Tensor, dropout: float = 0.0):
        self.embeddings = torch.cat([prompt_embedding, empty_embedding]).float().cpu()  # (2, L, D)
        self.dropout = dropout

    def __call__(self, b: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        dropped = (torch.rand(b, device=device) < self.dropout).long()  # 1 = the empty prompt
        if self.embeddings.device != device:  # moved once, not copied every step
            self.embeddings = self.embeddings.to(device)
        return self.embeddings[dropped].to(dtype), dropped


class DenoisingLoss:
    """Per-sample loss (b,) of the family's UNet for a batch of faces (or cached latent moments)."""

    def __init__(self, objective, latents: Latents | None = None, prompts: Prompts | None = None):
        self.objective, self.latents, self.prompts = objective, latents, prompts

    def __call__(self, phase: str, nets: dict[str, nn.Module], batch: torch.Tensor):
        x_0 = self.latents(batch) if self.latents is not None else batch
        x_in, time, saved = self.objective.corrupt(x_0)
        stats, context = {}, {}
        if self.prompts is not None:
            context["encoder_hidden_states"], dropped = self.prompts(len(x_0), x_0.device, x_in.dtype)
            stats["prompt_dropped"] = dropped.float().mean()
        output = nets["unet"](x_in, time, **context).sample
        return self.objective.error(output, saved), stats
