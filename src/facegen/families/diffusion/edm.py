"""EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"):
the preconditioning around a denoiser network, and the deterministic Heun sampler (Algorithm 1)
as a diffusers scheduler, so the one denoising loop (loop.py) runs it like any other.

D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma)), with
c_skip = s_d^2 / (sigma^2 + s_d^2), c_out = sigma s_d / sqrt(sigma^2 + s_d^2),
c_in = 1 / sqrt(sigma^2 + s_d^2), c_noise = ln(sigma) / 4 (Table 1). diffusers' EDM schedulers
(EDMEulerScheduler, EDMDPMSolverMultistepScheduler) use the same four, so a UNet trained here
samples there too.
"""

from __future__ import annotations

import torch
from diffusers import EDMEulerScheduler
from diffusers.schedulers.scheduling_utils import SchedulerOutput


def precondition(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in, c_noise) for noise levels `sigma` (EDM Table 1)."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1 / total.sqrt(), sigma.log() / 4


def edm_scheduler(sigma_min: float, sigma_max: float, sigma_data: float, rho: float = 7.0) -> EDMEulerScheduler:
    """The scheduler config an EDM model is trained, exported and sampled with (Karras sigmas, F-prediction)."""
    return EDMEulerScheduler(sigma_min=sigma_min, sigma_max=sigma_max, sigma_data=sigma_data, rho=rho,
                             sigma_schedule="karras", prediction_type="epsilon", final_sigmas_type="zero")


class EDMHeunScheduler(EDMEulerScheduler):
    """EDM Algorithm 1 (S_churn = 0): N Karras sigmas, an Euler step from each, corrected by the
    slope at its end (Heun) except the last step to sigma = 0; 2N - 1 network evaluations.

    `timesteps` lists the noise level of every evaluation (each interior sigma twice), so a
    plain loop `for t in timesteps: x = step(unet(scale_model_input(x, t), t), t, x)` runs it."""

    order = 2

    @property
    def init_noise_sigma(self) -> float:
        return float(self.config.sigma_max)  # x_0 ~ N(0, sigma_max^2 I), as in EDM

    def set_timesteps(self, num_inference_steps: int, device=None, sigmas=None):
        super().set_timesteps(num_inference_steps, device=device, sigmas=sigmas)
        steps = self.sigmas  # N sigmas, then 0
        # evaluation i -> (sigma evaluated at, interval index, is it the correction)
        self.plan = []
        for i in range(len(steps) - 1):
            self.plan.append((steps[i], i, False))
            if steps[i + 1] > 0:
                self.plan.append((steps[i + 1], i, True))
        self.timesteps = self.precondition_noise(torch.stack([s for s, _, _ in self.plan])).to(device)
        self._evaluation = 0

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        self.is_scale_input_called = True
        return self.precondition_inputs(sample, self.plan[self._evaluation][0])

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = True, **_):
        sigma, i, correction = self.plan[self._evaluation]
        self._evaluation += 1
        sample = sample.float()
        denoised = self.precondition_outputs(sample, model_output.float(), sigma)
        slope = (sample - denoised) / sigma
        sigma_now, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        if not correction:
            self._start, self._slope = sample, slope
            prev = sample + (sigma_next - sigma_now) * slope               # Euler to sigma_next
        else:
            prev = self._start + (sigma_next - sigma_now) * (self._slope + slope) / 2  # Heun's average slope
        return SchedulerOutput(prev_sample=prev) if return_dict else (prev,)
