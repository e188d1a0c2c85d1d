"""The autoencoder family: the first stage of latent diffusion (Rombach et al. 2022).

Config (`model:` section, AutoencoderOptions below): an AutoencoderKL
with downsampling factor 4 or 8 and `latent_channels`, trained with L1 + perceptual + small
KL + a patch discriminator from `disc_start` on. Two phases in the shared loop: "main"
(the autoencoder) then "D" (the discriminator, a no-op before `disc_start` when LPIPS is
the perceptual loss).

Export (RUN/model/): the VAE in diffusers format (`AutoencoderKL.from_pretrained` loads it)
with `scaling_factor` = 1/std of the data's latents, facegen.json (family, resolution,
latent shape and scale) and reconstruction.json (PSNR, SSIM, rFID on the holdout split);
RUN/samples/reconstructions.png shows holdout faces over their reconstructions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import AutoencoderKL

from facegen.families.ae.evaluate import latent_scale, reconstruction_metrics
from facegen.families.ae.generator import Reconstructions
from facegen.families.ae.loss import AutoencoderLoss
from facegen.families.ae.networks import KLAutoencoder, PatchDiscriminator, make_autoencoder
from facegen.families.ae.perceptual import load_lpips
from facegen.families.base import Built, FamilyOptions, Phase, Range, integer, integers, number, option
from facegen.utils import FacegenError, atomic_write_json, save_png

INFO = "facegen.json"


@dataclass(frozen=True)
class AutoencoderOptions(FamilyOptions):
    """The `model:` section of an ae run."""

    family: ClassVar[str] = "ae"
    downsample: int = 4                   # image side / latent side (4 or 8)
    channels: list = option([128, 256, 512])  # encoder/decoder widths, one per resolution (log2(downsample) + 1)
    latent_channels: int = 3              # 128x128 faces -> 32x32x3 latents with downsample 4
    layers_per_block: int = 2
    norm_groups: int = 32
    kl_weight: float = 1.0e-6             # taming's KL weight (relative to pixel-summed L1)
    perceptual: str = "auto"              # auto = LPIPS when loadable, else discriminator feature matching; lpips; features
    perceptual_weight: float = 1.0
    disc_start: int = 50001               # step at which the adversarial term (and, with LPIPS, D training) starts
    disc_weight: float = 0.5              # multiplies the adaptive weight
    disc_channels: int = 64
    disc_layers: int = 3
    scale_images: int = 512               # training images used to measure the latent std at export
    eval_images: int = 256                # holdout images for PSNR / SSIM / rFID at export

    RANGES: ClassVar[dict] = {
        "downsample": Range("a power of 2 (2, 4, 8, ...)", lambda v: isinstance(v, int) and v >= 2 and v & (v - 1) == 0),
        "channels": integers(non_empty=True),
        **{key: integer() for key in ("latent_channels", "layers_per_block", "norm_groups", "disc_channels", "disc_layers",
                                      "scale_images", "eval_images")},
        "disc_start": integer(low=0),
        **{key: number(">= 0") for key in ("kl_weight", "perceptual_weight", "disc_weight")},
    }

    def check(self, sample_options: dict) -> None:
        super().check(sample_options)
        levels = self.downsample.bit_length()  # log2(downsample) + 1 resolutions
        if len(self.channels) != levels:
            raise FacegenError(f"model.channels must have {levels} entries (one per resolution) for model.downsample={self.downsample}, "
                               f"got {self.channels!r}")
        if any(width % self.norm_groups for width in self.channels):
            raise FacegenError(f"model.norm_groups must divide every entry of model.channels {self.channels!r}, got {self.norm_groups!r}")


class AutoencoderFamily:
    name = "ae"
    options = AutoencoderOptions
    model_defaults = AutoencoderOptions.defaults()

    def build(self, cfg: dict, resolution: int) -> Built:
        o = AutoencoderOptions.from_config(cfg)
        vae = KLAutoencoder(make_autoencoder(resolution, o.downsample, tuple(o.channels), o.latent_channels,
                                             o.layers_per_block, o.norm_groups))
        disc = PatchDiscriminator(o.disc_channels, o.disc_layers)
        if o.perceptual not in ("auto", "lpips", "features"):
            raise FacegenError(f"model.perceptual must be auto, lpips or features, got {o.perceptual!r}")
        lpips = None if o.perceptual == "features" else load_lpips(required=o.perceptual == "lpips")
        loss = AutoencoderLoss(o.kl_weight, o.perceptual_weight, o.disc_weight, o.disc_start, lpips)

        def adam(net):
            return torch.optim.Adam(net.parameters(), lr=cfg["lr"], betas=tuple(cfg["adam_betas"]), weight_decay=cfg["weight_decay"])

        def count_step():  # after the last phase: one completed training step
            vae.steps += 1

        phases = [Phase("main", ["vae"], adam(vae)), Phase("D", ["disc"], adam(disc), after_step=count_step)]
        return Built(nets={"vae": vae, "disc": disc}, phases=phases, loss=loss,
                     frozen={"lpips": lpips} if lpips is not None else {})

    def generator(self, built: Built, cfg: dict) -> Reconstructions:
        """The loop's preview grids: reconstructions of fixed holdout faces (seed k = face k)."""
        store = _store(cfg)
        if store is None:
            raise FacegenError("the ae family shows reconstructions in its grids and needs the store path (config key data)")
        split = "holdout" if "holdout" in store.splits else "train"
        return Reconstructions(_vae(built), store.split(split), cfg.get("name") or "ae")

    def export(self, built: Built, cfg: dict, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        vae = _vae(built)
        device = next(vae.parameters()).device
        was_training = vae.training
        vae.eval()
        info = {"family": self.name, "resolution": int(vae.config.sample_size), "latent_channels": int(vae.config.latent_channels),
                "downsample": 2 ** (len(vae.config.block_out_channels) - 1), "latent_scale": None}
        o, store = AutoencoderOptions.from_config(cfg), _store(cfg)
        if store is not None:
            # both measured on faces spread over their split, never its first rows (one source of a merged store)
            info["latent_scale"] = latent_scale(vae, store.subset("train", o.scale_images), o.scale_images, device)
            vae.register_to_config(scaling_factor=info["latent_scale"])
            split = "holdout" if "holdout" in store.splits else store.splits[-1]
            metrics, grid = reconstruction_metrics(vae, store.subset(split, o.eval_images), o.eval_images, device)
            atomic_write_json(out_dir / "reconstruction.json", {"split": split, "store": str(store.path),
                                                                "rows": "evenly spaced over the split", **metrics})
            save_png(out_dir.parent / "samples" / "reconstructions.png", grid)
        vae.save_pretrained(out_dir)
        atomic_write_json(out_dir / INFO, info)
        vae.train(was_training)

    def load_generator(self, model_dir: Path, device: torch.device | str = "cpu"):
        raise FacegenError(f"{model_dir} is an autoencoder: it reconstructs faces but does not make new ones; "
                           f"train latent diffusion on it: facegen train ldm-tiny64 --data STORE --out RUN --autoencoder {Path(model_dir).parent}")


def _vae(built: Built) -> AutoencoderKL:
    return getattr(built.nets["vae"], "module", built.nets["vae"]).vae


def _store(cfg: dict):
    """The face store the run trains on (the loop records its path as cfg['data']), or None."""
    from facegen.data.store import FaceStore

    return FaceStore(cfg["data"]) if cfg.get("data") else None


FAMILY = AutoencoderFamily()
