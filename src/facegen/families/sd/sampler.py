"""Text-conditioned sampling with classifier-free guidance (Ho & Salimans 2022, eq. 6):
eps = eps(x, "") + w * (eps(x, prompt) - eps(x, "")), stepped by a diffusers scheduler."""

from __future__ import annotations

import torch

# name -> (diffusers scheduler class, whether its step draws noise); "default" = the model's own.
SAMPLERS = {
    "default": (None, False),
    "pndm": ("PNDMScheduler", False),
    "ddim": ("DDIMScheduler", False),
    "ddpm": ("DDPMScheduler", True),
    "dpm++": ("DPMSolverMultistepScheduler", False),
    "unipc": ("UniPCMultistepScheduler", False),
    "euler-a": ("EulerAncestralDiscreteScheduler", True),
}


# SD's latents (scaled to about unit variance) must never be clamped to [-1, 1] or thresholded.
# SD's own scheduler config (PNDM's) has no clip_sample key, and DDIM and DDPM default it to
# true, so both are switched off for every sampler (a class without the key ignores it).
UNCLAMPED = {"clip_sample": False, "thresholding": False}


def make_scheduler(scheduler_config: dict, sampler: str):
    """A fresh scheduler (they keep per-run state) with the model's betas; `sampler` picks the algorithm."""
    import diffusers

    class_name = SAMPLERS[sampler][0] or scheduler_config["_class_name"]
    return getattr(diffusers, class_name).from_config(scheduler_config, **UNCLAMPED)


@torch.no_grad()
def sample_latents(unet, scheduler, x_T: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, steps: int,
                   guidance_scale: float, generators: list[torch.Generator] | None) -> torch.Tensor:
    """Denoise x_T (n, 4, h, w) in `steps` steps; cond/uncond are (n, L, D) text embeddings.

    `generators` (one per image) feed stochastic schedulers, so an image never depends on
    which batch it is in. guidance_scale 1 skips the unconditional pass (plain conditional)."""
    scheduler.set_timesteps(steps, device=x_T.device)
    x = x_T * scheduler.init_noise_sigma
    guided = guidance_scale != 1.0
    context = torch.cat([uncond, cond]) if guided else cond
    extra = {"generator": generators} if generators is not None else {}
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(torch.cat([x, x]) if guided else x, t)
        eps = unet(x_in.to(unet.dtype), t, encoder_hidden_states=context.to(unet.dtype)).sample.float()
        if guided:
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        x = scheduler.step(eps, t, x, **extra).prev_sample
    return x
