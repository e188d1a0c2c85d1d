"""The pixel-diffusion networks: a UNet2DModel, the scheduler that defines its noise (DDPM's
betas, or EDM's sigmas) and the training objective on that noise."""

from __future__ import annotations

from diffusers import DDPMScheduler

from facegen.families.diffusion.edm import edm_scheduler
from facegen.families.diffusion.loss import DdpmObjective, EdmObjective
from facegen.nets.unet import make_unet
from facegen.utils import FacegenError

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction")


def make_scheduler(o, clip_sample: bool = True):
    """The training scheduler of DiffusionOptions `o`; samplers are built from its config (STYLE G4).
    For objective edm it is an EDMEulerScheduler holding the sigma range and sigma_data.

    clip_sample clamps each step's predicted x_0 to [-1, 1]: right for pixels, wrong for
    latents scaled to unit variance (a third of their entries lie outside), so the latent
    family passes False."""
    if o.objective == "edm":
        return edm_scheduler(o.sigma_min, o.sigma_max, o.sigma_data, o.rho)
    if o.beta_schedule not in BETA_SCHEDULES:
        raise FacegenError(f"model.beta_schedule must be one of {', '.join(BETA_SCHEDULES)}, got {o.beta_schedule!r}")
    if o.prediction_type not in PREDICTION_TYPES:
        raise FacegenError(f"model.prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {o.prediction_type!r}")
    return DDPMScheduler(
        num_train_timesteps=o.num_train_timesteps,
        beta_schedule=o.beta_schedule,
        beta_start=o.beta_start,
        beta_end=o.beta_end,
        prediction_type=o.prediction_type,
        clip_sample=clip_sample,
    )


def make_denoiser(o, resolution: int, in_channels: int = 3):
    """The UNet of DiffusionOptions `o`; resolution and channels are the denoised tensor's
    (pixels here, latents for the ldm family)."""
    return make_unet(
        resolution,
        in_channels=in_channels,
        block_out_channels=o.block_out_channels,
        layers_per_block=o.layers_per_block,
        attention_resolutions=o.attention_resolutions,
        attention_head_dim=o.attention_head_dim,
        dropout=o.dropout,
        norm_num_groups=o.norm_num_groups,
        weight_standardized=o.weight_standardized,
    )


def make_objective(o, scheduler):
    """The loss's noise process and weighting: DDPM's on `scheduler` (min-SNR with snr_gamma), or EDM's."""
    if o.objective == "edm":
        return EdmObjective(o.sigma_data, o.p_mean, o.p_std)
    return DdpmObjective(scheduler, o.snr_gamma)
