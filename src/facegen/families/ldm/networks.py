"""Networks of latent diffusion: the frozen first-stage VAE and a UNet on its latents.

The UNet is the pixel family's (facegen.nets.unet.make_unet: ADM-style residual blocks with
a timestep embedding in each, self-attention at the chosen feature-map sizes), built at the
latent resolution with the latent channel count. The noise schedule is the pixel family's
DDPMScheduler (`facegen.families.ddpm.networks.make_scheduler`).
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import AutoencoderKL

from facegen.families.ddpm.networks import make_denoiser, make_scheduler
from facegen.utils import FacegenError


def autoencoder_dir(path) -> Path:
    """RUN_AE or RUN_AE/model -> the folder holding the exported VAE."""
    if path is None:
        raise FacegenError("latent diffusion needs a trained autoencoder: pass --autoencoder RUN_AE (a run of an ae-* preset)")
    path = Path(path)
    for folder in (path / "model", path):
        if (folder / "facegen.json").is_file() and json.loads((folder / "facegen.json").read_text()).get("family") == "ae":
            return folder
    raise FacegenError(f"{path}: not an exported autoencoder (no model/facegen.json of family 'ae'); "
                       "train one first: facegen train ae-tiny64 --data STORE --out RUN_AE")


def load_autoencoder(path, resolution: int) -> AutoencoderKL:
    """The exported VAE, frozen, checked against the image resolution; its scaling_factor is the latent scale."""
    folder = autoencoder_dir(path)
    info = json.loads((folder / "facegen.json").read_text())
    if info.get("latent_scale") is None:
        raise FacegenError(f"{folder}: the autoencoder has no latent scale (it was exported without its data); re-export it")
    if int(info["resolution"]) != resolution:
        raise FacegenError(f"{folder}: the autoencoder was trained at {info['resolution']}px but the data is {resolution}px; "
                           "use a store of the same size")
    return AutoencoderKL.from_pretrained(folder).eval().requires_grad_(False)


def make_latent_scheduler(o):
    """The pixel family's noise schedule without clip_sample: scaled latents have unit
    variance, so clamping the predicted z_0 to [-1, 1] would cut about a third of them."""
    return make_scheduler(o, clip_sample=False)


def make_latent_unet(o, vae: AutoencoderKL, resolution: int):
    factor = 2 ** (len(vae.config.block_out_channels) - 1)  # the VAE's downsampling
    return make_denoiser(o, resolution // factor, in_channels=int(vae.config.latent_channels))
