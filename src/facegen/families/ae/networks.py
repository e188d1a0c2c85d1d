"""The first stage of latent diffusion: a KL autoencoder and a patch discriminator.

The autoencoder is diffusers' AutoencoderKL, wrapped so that one `forward` returns both
the reconstruction and the posterior: the loop may wrap nets for distributed training
(DDP only syncs gradients of what runs through `forward`), so the loss never calls
`encode`/`decode` on a trained net directly.
"""

from __future__ import annotations

import math

import torch
from diffusers import AutoencoderKL
from torch import nn

from facegen.utils import FacegenError


def make_autoencoder(
    resolution: int,                  # image side in pixels
    downsample: int = 4,              # image side / latent side: 4 or 8
    channels: tuple = (128, 256, 512),  # encoder widths, one per resolution; len = log2(downsample) + 1
    latent_channels: int = 3,         # channels of the latent image
    layers_per_block: int = 2,        # residual blocks per resolution
    norm_groups: int = 32,            # GroupNorm groups; must divide every width
) -> AutoencoderKL:
    levels = int(round(math.log2(downsample))) + 1
    if 2 ** (levels - 1) != downsample or len(channels) != levels:
        raise FacegenError(
            f"autoencoder: downsample={downsample} needs {levels} entries in `channels` "
            f"(one per resolution), got {list(channels)}; set ae.channels or ae.downsample in the config"
        )
    if resolution % downsample:
        raise FacegenError(f"autoencoder: resolution {resolution} is not a multiple of downsample={downsample}")
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_groups,
        sample_size=resolution,
        scaling_factor=1.0,  # replaced by 1/std of the data's latents at export
    )


class KLAutoencoder(nn.Module):
    """AutoencoderKL + a counter of completed training steps (a buffer, so checkpoints carry it)."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor, sample_posterior: bool = True):
        posterior = self.vae.encode(x).latent_dist  # DiagonalGaussianDistribution, (b, c, h/f, w/f)
        z = posterior.sample() if sample_posterior else posterior.mode()  # global torch RNG: seeded and checkpointed by the loop
        return self.vae.decode(z).sample, posterior  # (b, 3, h, w)

    def last_layer(self) -> torch.Tensor:
        """The decoder's output convolution, for the adaptive GAN weight (taming's `last_layer`)."""
        return self.vae.decoder.conv_out.weight


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix's NLayerDiscriminator, as in taming-transformers).

    GroupNorm instead of BatchNorm: the verdict on one image never depends on the rest of
    its batch, so real and fake batches can be judged in separate calls and results do not
    change with the number of processes.
    """

    def __init__(self, channels: int = 64, layers: int = 3):
        super().__init__()
        blocks = [nn.Sequential(nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2))]
        width = channels
        for i in range(1, layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            blocks.append(nn.Sequential(nn.Conv2d(width, out, 4, stride, 1, bias=False), nn.GroupNorm(min(32, out // 4), out), nn.LeakyReLU(0.2)))
            width = out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(width, 1, 4, 1, 1)  # one logit per patch

    def forward(self, x: torch.Tensor, features: bool = False):
        """Patch logits (b, 1, h', w'); with features=True also every block's activations."""
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        logits = self.head(x)
        return (logits, feats) if features else logits
