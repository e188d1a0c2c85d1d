"""DCGAN-style generator and discriminator/critic, sized for 32 to 128 pixels.

Generator: z (z_dim=200) -> dense -> (C0, 4, 4) -> upsample + conv3x3 + norm + ReLU blocks
-> conv3x3 to RGB -> output activation. The blocks upsample by 2, except that a size of
the form 4*3*2^k (96 = 4*3*2^3) first upsamples by 3 (4 -> 12 -> 24 -> 48 -> 96), so every
size starts from the same 4x4x256 tensor. Channels halve per block (never below
`min_channels`).

Output activation: "tanh", or "sigmoid" rescaled as 2*sigmoid(x) - 1 so that both land in
the data range [-1, 1] (the two differ only by the slope: 2*sigmoid(x) - 1 = tanh(x/2)).

Discriminator: conv4x4 stride-2 blocks with a norm and LeakyReLU(0.2), halving the size
while it is even and above 4 (64 -> 4x4, 96 -> 3x3), then a linear layer to one number.
It always returns a raw score: the "sigmoid output" of the classic GAN lives inside the
loss (softplus(-x) = -log sigmoid(x)), which is the numerically stable form; WGAN and hinge
use the score as it is (a linear critic).

Norms: "batch" (DCGAN), "layer" (WGAN-GP: a critic must not mix samples of a batch, since
the gradient penalty is per sample; GroupNorm(1, C) normalises over C, H, W), "none".
`spectral_norm=True` wraps every D layer (Miyato et al. 2018). All conv/linear weights get
He-normal init (He et al. 2015).

Residual nets (arch "resnet"): the SN-GAN ResNet of Miyato et al. 2018 (appendix B.4, the
64x64 / CelebA architecture that the Mimicry and StudioGAN benchmarks use). G: dense ->
(C0, 4, 4) -> up-blocks [BN-ReLU-up-conv3-BN-ReLU-conv3, + up-conv1 shortcut] -> BN-ReLU-conv3
-> output. D: down-blocks [ReLU-conv3-ReLU-conv3-avgpool, + conv1-avgpool shortcut] (the
first block without the leading ReLU, shortcut pooled first) -> ReLU -> global sum -> linear.
Shortcuts keep an identity path from z to pixels, which is what lets these train for long
without collapsing.

StyleGAN2 nets (arch "style"): mapping network, modulated convolutions, noise, skip G and
residual D with minibatch stddev, in style.py; make_generator / make_discriminator build them.
"""

from __future__ import annotations

import torch
from torch import nn

from facegen.families.gan.style import StyleDiscriminator, StyleGenerator

NORMS = ("batch", "layer", "none")
ARCHS = ("dcgan", "resnet", "style")
OUTPUTS = ("tanh", "sigmoid")


def upsample_factors(resolution: int) -> list[int]:
    """The upsampling factor of each G block from 4x4: [2]*k, or [3]+[2]*k for 4*3*2^k."""
    size, factors = 4, []
    if resolution % 3 == 0:
        size, factors = 12, [3]
    while size < resolution:
        size, factors = size * 2, factors + [2]
    if size != resolution or resolution < 8:
        raise ValueError(f"GAN resolution {resolution} unsupported: use 4*2^k or 4*3*2^k (32, 48, 64, 96, 128)")
    return factors


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; use one of {NORMS}")


def he_init(net: nn.Module, negative_slope: float) -> None:
    """He-normal weights and zero biases for every conv and linear layer."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=negative_slope, nonlinearity="leaky_relu")
            nn.init.zeros_(m.bias)


def spectral_norm_every_layer(net: nn.Module) -> None:
    """Wrap every conv and linear layer of `net` in spectral normalisation (Miyato et al. 2018)."""
    for m in list(net.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.utils.parametrizations.spectral_norm(m)


class Generator(nn.Module):
    def __init__(
        self,
        resolution: int = 64,       # output size in pixels (see upsample_factors)
        z_dim: int = 200,           # length of the latent vector z
        channels: int = 256,        # channels of the first 4x4 tensor; halved per block
        min_channels: int = 16,     # floor for the halving
        norm: str = "batch",        # "batch", "layer" or "none"
        output: str = "tanh",       # "tanh" or "sigmoid" (rescaled to [-1, 1])
    ):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; use one of {OUTPUTS}")
        self.resolution, self.z_dim, self.channels, self.output = resolution, z_dim, channels, output
        self.dense = nn.Linear(z_dim, channels * 4 * 4)
        self.dense_norm = _norm2d(norm, channels)
        blocks, c = [], channels
        for factor in upsample_factors(resolution):
            c_out = max(c // 2, min_channels)
            blocks += [nn.Upsample(scale_factor=factor, mode="nearest"), nn.Conv2d(c, c_out, 3, padding=1), _norm2d(norm, c_out), nn.ReLU()]
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.to_rgb = nn.Conv2d(c, 3, 3, padding=1)
        he_init(self, negative_slope=0.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(z).view(-1, self.channels, 4, 4)         # (b, C0, 4, 4)
        x = self.blocks(torch.relu(self.dense_norm(x)))         # (b, c, H, W)
        x = self.to_rgb(x)                                      # (b, 3, H, W)
        return torch.tanh(x) if self.output == "tanh" else 2 * torch.sigmoid(x) - 1


class Discriminator(nn.Module):
    def __init__(
        self,
        resolution: int = 64,       # input size in pixels
        channels: int = 32,         # channels after the first conv; doubled per block
        max_channels: int = 512,    # ceiling for the doubling
        norm: str = "batch",        # "batch" (DCGAN), "layer" (WGAN-GP) or "none"
        spectral_norm: bool = False,  # wrap every layer in spectral normalisation
    ):
        super().__init__()
        layers, c_in, c, size = [], 3, channels, resolution
        while size > 4 and size % 2 == 0:
            # DCGAN: no norm on the first layer, it sees raw pixels.
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), _norm2d(norm if c_in != 3 else "none", c), nn.LeakyReLU(0.2)]
            c_in, c, size = c, min(c * 2, max_channels), size // 2
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(c_in * size * size, 1)
        he_init(self, negative_slope=0.2)
        if spectral_norm:
            spectral_norm_every_layer(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(x).flatten(1)).squeeze(1)   # (b,)


class UpBlock(nn.Module):
    """G's residual block: doubles the size (SN-GAN's GBlock)."""

    def __init__(self, c_in: int, c_out: int, norm: str):
        super().__init__()
        self.norm1, self.conv1 = _norm2d(norm, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm2d(norm, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = lambda t: nn.functional.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
        h = self.conv1(up(torch.relu(self.norm1(x))))
        h = self.conv2(torch.relu(self.norm2(h)))
        return h + self.shortcut(up(x))


class DownBlock(nn.Module):
    """D's residual block: halves the size (SN-GAN's DBlock; `first` is its OptimizedDisBlock)."""

    def __init__(self, c_in: int, c_out: int, first: bool = False):
        super().__init__()
        self.first = first
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else torch.relu(x)      # the first block sees raw pixels: no ReLU before it
        h = nn.functional.avg_pool2d(self.conv2(torch.relu(self.conv1(h))), 2)
        # pooling before the 1x1 conv is the same function, 4x cheaper
        shortcut = self.shortcut(nn.functional.avg_pool2d(x, 2)) if self.first else nn.functional.avg_pool2d(self.shortcut(x), 2)
        return h + shortcut


class ResGenerator(nn.Module):
    def __init__(
        self,
        resolution: int = 64,       # output size in pixels: 4*2^k
        z_dim: int = 128,           # length of the latent vector z
        channels: int = 256,        # channels of the 4x4 tensor and the first block; halved per later block
        min_channels: int = 32,     # floor for the halving
        norm: str = "batch",        # "batch", "layer" or "none"
        output: str = "tanh",       # "tanh" or "sigmoid" (rescaled to [-1, 1])
    ):
        super().__init__()
        factors = upsample_factors(resolution)
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; use one of {OUTPUTS}")
        if 3 in factors:
            raise ValueError(f"resnet G resolution {resolution} unsupported: use 4*2^k (32, 64, 128)")
        self.resolution, self.z_dim, self.channels, self.output = resolution, z_dim, channels, output
        self.dense = nn.Linear(z_dim, channels * 4 * 4)
        blocks, c = [], channels
        for i in range(len(factors)):
            c_out = c if i == 0 else max(c // 2, min_channels)
            blocks.append(UpBlock(c, c_out, norm))
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.out_norm = _norm2d(norm, c)
        self.to_rgb = nn.Conv2d(c, 3, 3, padding=1)
        he_init(self, negative_slope=0.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.dense(z).view(-1, self.channels, 4, 4))   # (b, c, H, W)
        x = self.to_rgb(torch.relu(self.out_norm(x)))                  # (b, 3, H, W)
        return torch.tanh(x) if self.output == "tanh" else 2 * torch.sigmoid(x) - 1


class ResDiscriminator(nn.Module):
    def __init__(
        self,
        resolution: int = 64,       # input size in pixels: 4*2^k
        channels: int = 64,         # channels of the first block; doubled per block
        max_channels: int = 512,    # ceiling for the doubling
        spectral_norm: bool = True,  # wrap every layer in spectral normalisation
    ):
        super().__init__()
        blocks, c_in, c, size = [], 3, channels, resolution
        while size > 4:
            if size % 2:
                raise ValueError(f"resnet D resolution {resolution} unsupported: use 4*2^k (32, 64, 128)")
            blocks.append(DownBlock(c_in, c, first=c_in == 3))
            c_in, c, size = c, min(c * 2, max_channels), size // 2
        self.blocks = nn.Sequential(*blocks)
        self.score = nn.Linear(c_in, 1)
        he_init(self, negative_slope=0.0)
        if spectral_norm:
            spectral_norm_every_layer(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.blocks(x)).sum(dim=(2, 3))                 # (b, c): global sum pooling
        return self.score(h).squeeze(1)                                # (b,)


def make_generator(arch: str = "dcgan", **kwargs) -> nn.Module:
    """G by architecture name; exports record `arch` beside the other constructor arguments."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; use one of {ARCHS}")
    if arch == "style":
        return StyleGenerator(**kwargs)
    return (ResGenerator if arch == "resnet" else Generator)(**kwargs)


def make_discriminator(arch: str, resolution: int, channels: int, max_channels: int, norm: str, spectral_norm: bool) -> nn.Module:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; use one of {ARCHS}")
    if arch == "style":
        if norm != "none":
            raise ValueError("the style D has no norm layers: set model.d_norm=none")
        if spectral_norm:
            raise ValueError("the style D scales its weights by equalized learning rate, not spectral norm: set model.spectral_norm=false")
        return StyleDiscriminator(resolution, channels, max_channels)
    if arch == "resnet":
        if norm != "none":
            raise ValueError("the resnet D has no norm layers: set model.d_norm=none")
        return ResDiscriminator(resolution, channels, max_channels, spectral_norm)
    return Discriminator(resolution, channels, max_channels, norm, spectral_norm)
