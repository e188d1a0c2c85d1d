"""The one denoising loop (DDPMPipeline's and StableDiffusionPipeline's __call__, together):
x_T * init_noise_sigma, then per timestep the scaled input through the network, optional
classifier-free guidance (Ho & Salimans 2022, eq. 6), and the scheduler's step.

Stochastic steps draw from one generator per sample, so a face never depends on which batch
it is in; `eta` reaches the schedulers that take it (DDIM).
"""

from __future__ import annotations

import inspect

import torch


@torch.no_grad()
def denoise(unet, scheduler, x_T: torch.Tensor, steps: int, generators: list[torch.Generator] | None = None, eta: float = 0.0,
            cond: torch.Tensor | None = None, uncond: torch.Tensor | None = None, guidance_scale: float = 1.0) -> torch.Tensor:
    """x_T (n, c, h, w) of unit variance -> x_0. cond/uncond: (n, L, D) text embeddings for a
    conditional UNet; guidance_scale 1 skips the unconditional pass."""
    scheduler.set_timesteps(steps, device=x_T.device)
    takes = inspect.signature(scheduler.step).parameters
    step_options = {k: v for k, v in (("generator", generators), ("eta", eta)) if k in takes and v is not None}
    guided = cond is not None and guidance_scale != 1.0
    context = {} if cond is None else {"encoder_hidden_states": (torch.cat([uncond, cond]) if guided else cond).to(unet.dtype)}
    x = x_T * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(torch.cat([x, x]) if guided else x, t)
        output = unet(x_in.to(unet.dtype), t, **context).sample.float()
        if guided:
            output_uncond, output_cond = output.chunk(2)
            output = output_uncond + guidance_scale * (output_cond - output_uncond)
        x = scheduler.step(output, t, x, **step_options).prev_sample
    return x
