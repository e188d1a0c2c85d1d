"""The pixel-diffusion networks: a UNet2DModel and the DDPMScheduler that defines its noise."""

from __future__ import annotations

from diffusers import DDPMScheduler

from facegen.nets.unet import make_unet
from facegen.utils import FacegenError

MODEL_DEFAULTS: dict = {
    # UNet
    "block_out_channels": [128, 256, 256, 256],  # channels per level (resolution halves at each)
    "layers_per_block": 2,
    "attention_resolutions": [16],               # feature-map sizes with self-attention
    "attention_head_dim": 8,                     # channels per attention head
    "dropout": 0.0,
    "norm_num_groups": None,                     # None = 32 or the largest that divides every level
    "weight_standardized": False,                # weight-standardised ResNet convs (exported baked in)
    # noise schedule and objective
    "num_train_timesteps": 1000,                 # 1000, 1500, 2000, ...
    "beta_schedule": "linear",                   # linear | scaled_linear | squaredcos_cap_v2 (cosine)
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "prediction_type": "epsilon",                # epsilon | v_prediction
    "snr_gamma": None,                           # min-SNR-gamma loss weighting (Hang et al. 2023); None = plain MSE
    # sampling defaults written into the export (facegen sample can override them)
    "sampler": "ddim",                           # ddpm | ddim | dpm++ | unipc
    "sample_steps": 50,
}

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction")


def make_scheduler(model: dict, clip_sample: bool = True) -> DDPMScheduler:
    """The training scheduler; samplers are built from its config (STYLE G4).

    clip_sample clamps each step's predicted x_0 to [-1, 1]: right for pixels, wrong for
    latents scaled to unit variance (a third of their entries lie outside), so the latent
    family passes False."""
    if model["beta_schedule"] not in BETA_SCHEDULES:
        raise FacegenError(f"model.beta_schedule must be one of {', '.join(BETA_SCHEDULES)}, got {model['beta_schedule']!r}")
    if model["prediction_type"] not in PREDICTION_TYPES:
        raise FacegenError(f"model.prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {model['prediction_type']!r}")
    return DDPMScheduler(
        num_train_timesteps=model["num_train_timesteps"],
        beta_schedule=model["beta_schedule"],
        beta_start=model["beta_start"],
        beta_end=model["beta_end"],
        prediction_type=model["prediction_type"],
        clip_sample=clip_sample,
    )


def make_denoiser(model: dict, resolution: int, in_channels: int = 3):
    """The UNet of a `model:` section; resolution and channels are the denoised tensor's
    (pixels here, latents for the ldm family)."""
    return make_unet(
        resolution,
        in_channels=in_channels,
        block_out_channels=model["block_out_channels"],
        layers_per_block=model["layers_per_block"],
        attention_resolutions=model["attention_resolutions"],
        attention_head_dim=model["attention_head_dim"],
        dropout=model["dropout"],
        norm_num_groups=model["norm_num_groups"],
        weight_standardized=model["weight_standardized"],
    )
