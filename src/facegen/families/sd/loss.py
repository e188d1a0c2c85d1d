"""Stable Diffusion's training objective: predict the noise added to VAE latents, given the
fixed prompt's text embedding (Rombach et al. 2022, eq. 2; Ho et al. 2020, eq. 14)."""

from __future__ import annotations

import torch
from torch import nn


class LatentNoiseLoss:
    """eps-prediction MSE on VAE latents, one fixed prompt, optional prompt dropout.

    The prompt's embedding is computed once (the text encoder is frozen, so it never changes)
    and replaced by the empty prompt's with probability `prompt_dropout`, which keeps the
    unconditional prediction that classifier-free guidance needs (Ho & Salimans 2022).
    """

    def __init__(
        self,
        vae: nn.Module,                     # frozen AutoencoderKL
        scheduler,                          # DDPMScheduler with the base model's betas
        prompt_embedding: torch.Tensor,     # (1, L, D) text embedding of the training prompt
        empty_embedding: torch.Tensor,      # (1, L, D) text embedding of ""
        prompt_dropout: float = 0.0,        # probability of training a sample on "" instead
        inputs: str = "images",             # "images" in [-1, 1], or "moments": cached VAE mean and log-variance
    ):
        self.vae, self.scheduler, self.prompt_dropout, self.inputs = vae, scheduler, prompt_dropout, inputs
        self.embeddings = torch.cat([prompt_embedding, empty_embedding]).float().cpu()  # (2, L, D)
        self.scaling_factor = vae.config.scaling_factor  # latents scaled to roughly unit variance (SD: 0.18215)

    def __call__(self, phase: str, nets: dict[str, nn.Module], images: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        unet = nets["unet"]
        x0 = self.latents(images)                                              # (b, 4, h/8, w/8)
        b, device = x0.shape[0], x0.device
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), device=device)
        x_t = self.scheduler.add_noise(x0, noise, t)
        dropped = (torch.rand(b, device=device) < self.prompt_dropout).long()  # 1 = use ""
        if self.embeddings.device != device:  # moved once, not copied every step
            self.embeddings = self.embeddings.to(device)
        context = self.embeddings[dropped].to(x_t.dtype)                       # (b, L, D)
        pred = unet(x_t, t, encoder_hidden_states=context).sample
        target = noise if self.scheduler.config.prediction_type == "epsilon" else self.scheduler.get_velocity(x0, noise, t)
        loss = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))    # (b,)
        return loss, {"prompt_dropped": float(dropped.float().mean())}

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """A sample of the VAE posterior, scaled; the VAE sees its own dtype (bf16 on GPU)."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        if self.inputs == "moments":
            posterior = DiagonalGaussianDistribution(images.float())
        else:
            vae_dtype = next(self.vae.parameters()).dtype
            posterior = self.vae.encode(images.to(vae_dtype)).latent_dist
        return posterior.sample().float() * self.scaling_factor
