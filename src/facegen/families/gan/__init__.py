"""The GAN family: DCGAN, L2-regularised GAN, WGAN (clipping), WGAN-GP, the modern
stabilisers (hinge loss, spectral norm, R1, DiffAugment; EMA of G comes from the loop), and
StyleGAN2's nets (g_arch/d_arch "style": mapping network, truncation in w, style mixing, path
length) with R3GAN's objective (rpgan + R1 + R2) as options of one family.

Config: the `model:` section of a run config fills `GanOptions` below (the family's
`model_defaults`); the common `lr`, `adam_betas` and `weight_decay` set both optimizers
unless `model.g_lr` / `model.d_lr` say otherwise. Training runs the
shared loop with two phases, "D" (repeated n_critic times, WGAN weight clipping after each
step) then "G". The export (RUN/model/) holds only the EMA generator: generator.safetensors
plus facegen.json with everything needed to rebuild it. The style G's w_avg (the centre of its
truncation) and its fixed sampling noise are buffers: checkpoints and the export carry them (the
loop's EMA averages parameters only, so the exported w_avg is the one the trained G tracked).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from facegen.families.base import Built, FamilyOptions, Phase, integer, number, option
from facegen.families.gan.augment import diff_augment
from facegen.families.gan.generator import GanGenerator
from facegen.families.gan.loss import GanLoss, clip_weights
from facegen.families.gan.networks import make_discriminator, make_generator
from facegen.families.gan.sampler import standing_stats
from facegen.utils import FacegenError, atomic_write_json

WEIGHTS, CONFIG = "generator.safetensors", "facegen.json"   # facegen.json: read by facegen.sample.load_generator


@dataclass(frozen=True)
class GanOptions(FamilyOptions):
    family: ClassVar[str] = "gan"
    objective: str = "nonsaturating"   # "nonsaturating" (DCGAN), "wgan", "hinge" or "rpgan" (R3GAN's relativistic pairing)
    g_arch: str = "dcgan"             # G architecture: "dcgan" (upsample + conv), "resnet" (SN-GAN residual blocks) or "style" (StyleGAN2)
    d_arch: str = "dcgan"             # D architecture: "dcgan" (strided convs), "resnet" (residual blocks, no norm) or "style" (StyleGAN2's)
    z_dim: int = 200                  # latent length
    w_dim: int | None = None          # style G: length of w; None = z_dim
    mapping_layers: int = 2           # style G: depth of the mapping network z -> w (StyleGAN2: 8)
    g_channels: int = 256             # G channels at 4x4, halved per upsampling block
    g_min_channels: int = 16          # floor of G's halving
    g_norm: str = "batch"             # G norm: "batch", "layer" or "none" (the style G: none)
    g_output: str = "tanh"            # "tanh" or "sigmoid" (rescaled to [-1, 1]); the style G also "linear" (StyleGAN2's)
    d_channels: int = 32              # D channels after its first conv, doubled per block
    d_max_channels: int = 512         # ceiling of D's doubling
    d_norm: str = "batch"             # D norm: "batch" (DCGAN), "layer" (WGAN-GP) or "none"
    spectral_norm: bool = False       # spectral normalisation on every D layer
    optimizer: str = "adam"           # "adam" or "rmsprop" (WGAN with clipping)
    g_lr: float | None = None         # generator learning rate; None = the config's lr
    d_lr: float | None = None         # discriminator/critic learning rate; None = the config's lr
    n_critic: int = 1                 # D steps per G step
    clip: float | None = None         # WGAN weight clipping bound; None = no clipping
    gp_lambda: float = 0.0            # WGAN-GP gradient penalty weight; 0 = off
    r1_gamma: float = 0.0             # R1 penalty weight (on reals); 0 = off
    r2_gamma: float = 0.0             # R2 penalty weight (the same on fakes; R3GAN: = r1_gamma); 0 = off
    r1_every: int = 1                 # lazy regularisation: R1/R2 on every N-th D step, weighted by N (StyleGAN2: 16)
    style_mixing: float = 0.0         # style G: probability a fake takes a second z's w from a random layer on
    pl_weight: float = 0.0            # style G: path-length regularisation weight (StyleGAN2: 2); 0 = off
    l2_lambda: float = 0.0            # L2 weight penalty on G and D; 0 = off
    augment: list[str] = option([])   # DiffAugment policy, e.g. [color, translation, cutout]
    diverge_above: float | None = None  # stop when |loss_D| exceeds this; None = no bound

    RANGES: ClassVar[dict] = {
        **{key: integer() for key in ("z_dim", "g_channels", "g_min_channels", "d_channels", "d_max_channels", "n_critic", "mapping_layers", "r1_every")},
        "w_dim": integer(optional=True),
        **{key: number("> 0", optional=True) for key in ("g_lr", "d_lr", "clip", "diverge_above")},
        **{key: number(">= 0") for key in ("gp_lambda", "r1_gamma", "r2_gamma", "l2_lambda", "pl_weight")},
        "style_mixing": number("[0, 1]"),
    }
    SAMPLE_OPTIONS: ClassVar[dict] = {"psi": number("(0, 1]")}  # GanGenerator.decode's truncation

    def check(self, sample_options: dict) -> None:
        super().check(sample_options)
        for key in ("style_mixing", "pl_weight"):   # they would silently do nothing on another G
            if getattr(self, key) and self.g_arch != "style":
                raise FacegenError(f"model.{key} is an option of the style generator: set model.g_arch=style or model.{key}=0")
        if self.r1_every > 1 and not (self.r1_gamma or self.r2_gamma):
            raise FacegenError(f"model.r1_every={self.r1_every} spaces out R1/R2, but both are off: set model.r1_gamma (or model.r2_gamma) or model.r1_every=1")
        if self.l2_lambda and "style" in (self.g_arch, self.d_arch):
            raise FacegenError("model.l2_lambda weighs plain conv/linear weights and the style nets have none (equalized lr): "
                               "set model.l2_lambda=0")

    def generator_kwargs(self, resolution: int) -> dict:
        kwargs = dict(arch=self.g_arch, resolution=resolution, z_dim=self.z_dim, channels=self.g_channels, min_channels=self.g_min_channels,
                      norm=self.g_norm, output=self.g_output)
        if self.g_arch == "style":  # only the style G takes these: older exports keep their exact facegen.json
            kwargs.update(w_dim=self.w_dim or self.z_dim, mapping_layers=self.mapping_layers)
        return kwargs


class GanFamily:
    name = "gan"
    options = GanOptions
    model_defaults = GanOptions.defaults()

    def build(self, cfg: dict, resolution: int) -> Built:
        o = GanOptions.from_config(cfg)
        try:
            G = make_generator(**o.generator_kwargs(resolution))
            D = make_discriminator(o.d_arch, resolution, o.d_channels, o.d_max_channels, o.d_norm, o.spectral_norm)
            loss = GanLoss(o.objective, o.z_dim, o.gp_lambda, o.r1_gamma, o.l2_lambda,
                           diff_augment(o.augment) if o.augment else None, r2_gamma=o.r2_gamma,
                           num_ws=getattr(G, "num_ws", 0), style_mixing=o.style_mixing, pl_weight=o.pl_weight,
                           r1_every=o.r1_every)
        except ValueError as e:
            raise FacegenError(f"gan config: {e}") from None
        if o.r1_every > 1:  # which D steps regularise: a buffer, so checkpoints (and exact resumes) carry it
            D.register_buffer("reg_clock", torch.zeros([], dtype=torch.long))
        # A phase whose loss differentiates a gradient (WGAN-GP, R1, R2, path length) is not compiled (see Phase).
        phases = [
            Phase("D", ["D"], self._optimizer(o, cfg, D.parameters(), o.d_lr), repeats=o.n_critic,
                  after_step=clip_weights(D, o.clip) if o.clip else None, loss_bound=o.diverge_above, bound_key="model.diverge_above",
                  compilable=not (o.gp_lambda or o.r1_gamma or o.r2_gamma)),
            Phase("G", ["G"], self._optimizer(o, cfg, G.parameters(), o.g_lr), compilable=not o.pl_weight),
        ]
        return Built(nets={"G": G, "D": D}, phases=phases, loss=loss, ema=["G"])

    @staticmethod
    def _optimizer(o: GanOptions, cfg: dict, params, lr: float | None) -> torch.optim.Optimizer:
        lr, decay = lr or cfg.get("lr", 2e-4), cfg.get("weight_decay", 0.0)
        if o.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, betas=tuple(cfg.get("adam_betas", (0.5, 0.999))), weight_decay=decay)
        if o.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr, weight_decay=decay)
        raise FacegenError(f"gan config: unknown optimizer {o.optimizer!r}; use adam or rmsprop")

    def generator(self, built: Built, cfg: dict) -> GanGenerator:
        """The live (EMA-swapped) G for in-training grids; a copy, so the trained net stays as it is."""
        G = standing_stats(copy.deepcopy(built.nets["G"]))
        return GanGenerator(G, cfg.get("name") or "gan", G.resolution, next(G.parameters()).device)

    def export(self, built: Built, cfg: dict, out_dir: Path) -> None:
        from safetensors.torch import save_file

        o, G = GanOptions.from_config(cfg), standing_stats(copy.deepcopy(built.nets["G"]))
        resolution = G.resolution
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}, out_dir / WEIGHTS)
        atomic_write_json(out_dir / CONFIG, {"family": self.name, "name": cfg.get("name") or "gan", "resolution": resolution,
                                             "generator": o.generator_kwargs(resolution)})

    def load_generator(self, model_dir: Path, device: torch.device | str = "cpu") -> GanGenerator:
        from safetensors.torch import load_file

        model_dir = Path(model_dir)
        if not (model_dir / CONFIG).is_file() or not (model_dir / WEIGHTS).is_file():
            raise FacegenError(f"{model_dir}: not an exported GAN (needs {CONFIG} and {WEIGHTS}); train a run or pass its model/ folder")
        meta = json.loads((model_dir / CONFIG).read_text())
        G = make_generator(**meta["generator"])   # exports before the resnet option have no "arch": dcgan
        G.load_state_dict(load_file(model_dir / WEIGHTS))
        generator = GanGenerator(G, meta.get("name", "gan"), meta["resolution"], device)
        generator.recommended_psi = float(meta.get("recommended_psi", 1.0))
        return generator


FAMILY = GanFamily()
