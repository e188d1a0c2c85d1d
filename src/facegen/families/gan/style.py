"""StyleGAN2's generator and residual discriminator (Karras et al. 2020, "Analyzing and Improving
the Image Quality of StyleGAN", config F) in plain PyTorch: no custom CUDA ops. Where the
reference resamples with its [1, 3, 3, 1] FIR filter this uses bilinear upsampling and 2x2
average pooling, the closest built-in operations.

Generator (arch "style") = mapping + synthesis.
  mapping: z -> pixel norm -> `mapping_layers` fully connected layers (lrelu, learning rate x0.01)
  -> w. `w_avg`, a moving average of the w seen in training, is a buffer (checkpointed and
  exported): the centre that truncation pulls toward, w' = w_avg + psi * (w - w_avg).
  synthesis: a learned 4x4 constant, then per resolution two 3x3 modulated convolutions (one at
  4x4), each followed by per-pixel noise, a bias and lrelu; a toRGB (modulated 1x1, not
  demodulated) per resolution adds into an upsampled RGB image (the "skip" G). Every conv and
  toRGB reads its own w: ws (N, num_ws, w_dim), which is what style mixing swaps.

Modulation / demodulation (sec. 2.2): w scales the conv's input channels (an affine "style",
around 1), and each output channel is divided by the norm its weights would have after that
scaling, so activations keep unit variance without instance norm and its droplet artefacts.
This is the reference's non-fused path (scale activations, one ordinary conv, rescale), which
gives the same numbers as per-sample weights and stays one batched conv.

Noise: per-pixel Gaussian noise times a learned per-layer strength (0 at the start). Training
draws it fresh (torch's global RNG, which the loop checkpoints); sampling ("const", the eval-mode
default) uses a fixed noise image per layer, a buffer, so a face depends on its seed alone.

Equalized learning rate (Karras et al. 2018, sec. 4.1): weights are stored as N(0, 1) and
multiplied by 1/sqrt(fan_in) at every forward, so Adam's per-weight step moves every layer at the
same relative speed. lrelu carries a gain of sqrt(2) to keep unit variance.

Discriminator (arch "style"): fromRGB (1x1), residual blocks [conv3, downsample, conv3 + a 1x1
downsampled skip, the sum scaled by 1/sqrt(2)] down to 4x4, then the minibatch standard
deviation (one feature over groups of up to 4), conv3, a fully connected layer and the score.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from facegen.families.gan.sampler import truncate_w

OUTPUTS = ("linear", "tanh", "sigmoid")   # StyleGAN2's output is linear; sampling clamps to [-1, 1]
W_AVG_BETA = 0.995                          # w_avg follows the batch mean of w with this decay per forward


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (0.2) with gain sqrt(2): unit variance in, unit variance out."""
    return F.leaky_relu(x, 0.2) * math.sqrt(2)


def powers_of_two(resolution: int, what: str) -> int:
    """log2(resolution), or ValueError for a size this net cannot make."""
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"{what} resolution {resolution} unsupported: use a power of two (32, 64, 128, 256)")
    return int(math.log2(resolution))


class EqualLinear(nn.Module):
    """A fully connected layer with equalized learning rate (see the module docstring)."""

    def __init__(self, c_in: int, c_out: int, bias_init: float = 0.0, lr_mult: float = 1.0, activate: bool = False):
        super().__init__()
        # Stored as N(0, 1) / lr_mult and scaled by lr_mult at runtime: the same function, with
        # lr_mult times Adam's step (the mapping network learns 100x slower).
        self.weight = nn.Parameter(torch.randn(c_out, c_in) / lr_mult)
        self.bias = nn.Parameter(torch.full((c_out,), float(bias_init)))
        self.weight_gain, self.bias_gain, self.activate = lr_mult / math.sqrt(c_in), lr_mult, activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return lrelu(x) if self.activate else x


class EqualConv2d(nn.Module):
    """A stride-1 'same' convolution with equalized learning rate."""

    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool = True, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.weight_gain, self.activate = 1 / math.sqrt(c_in * kernel * kernel), activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.weight.shape[-1] // 2)
        return lrelu(x) if self.activate else x


class ModulatedConv2d(nn.Module):
    """A conv whose input channels are scaled per sample by a style from w, then (optionally)
    demodulated: each output channel divided by the norm of its style-scaled weights."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, kernel: int, demodulate: bool = True):
        super().__init__()
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)   # styles start at 1: the plain conv
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.weight_gain, self.demodulate = 1 / math.sqrt(c_in * kernel * kernel), demodulate

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)                                          # (N, c_in)
        weight = self.weight * self.weight_gain                          # (c_out, c_in, k, k)
        x = F.conv2d(x * styles[:, :, None, None], weight, padding=weight.shape[-1] // 2)
        if self.demodulate:
            # ||weight[o] * styles||^2 = sum_i styles_i^2 * sum_(k,k) weight[o, i]^2: one small matmul
            norms = styles.square() @ weight.square().sum(dim=(2, 3)).t()   # (N, c_out)
            x = x * torch.rsqrt(norms + 1e-8)[:, :, None, None]
        return x


class SynthesisLayer(nn.Module):
    """[upsample x2] -> modulated 3x3 conv -> + noise * strength -> + bias -> lrelu."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, resolution: int, up: bool):
        super().__init__()
        self.up = up
        self.conv = ModulatedConv2d(c_in, c_out, w_dim, 3)
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))  # the sampling noise: fixed
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        if self.up:  # before the modulation or after: the same (both are linear per channel)
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.conv(x, w)
        if noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype) * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength
        return lrelu(x + self.bias[None, :, None, None])


class SynthesisBlock(nn.Module):
    """One resolution: the 4x4 constant and one conv, or an upsampling conv and a conv; then toRGB."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, resolution: int):
        super().__init__()
        first = resolution == 4
        self.const = nn.Parameter(torch.randn(c_out, 4, 4)) if first else None
        self.convs = nn.ModuleList(([] if first else [SynthesisLayer(c_in, c_out, w_dim, resolution, up=True)])
                                   + [SynthesisLayer(c_out, c_out, w_dim, resolution, up=False)])
        self.to_rgb = ModulatedConv2d(c_out, 3, w_dim, 1, demodulate=False)
        self.rgb_bias = nn.Parameter(torch.zeros(3))
        self.num_conv = len(self.convs)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str):
        """ws (N, num_conv + 1, w_dim): one w per conv, then the toRGB's (the next block's first)."""
        if self.const is not None:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        for i, conv in enumerate(self.convs):
            x = conv(x, ws[:, i], noise_mode)
        rgb = self.to_rgb(x, ws[:, self.num_conv]) + self.rgb_bias[None, :, None, None]
        img = rgb if img is None else F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False) + rgb
        return x, img


class StyleGenerator(nn.Module):
    truncation_space = "w"   # GanGenerator.decode truncates in w (sampler.truncate_w), not z

    def __init__(
        self,
        resolution: int = 32,       # output size in pixels: a power of two
        z_dim: int = 128,           # length of z
        w_dim: int | None = None,   # length of w; None = z_dim
        mapping_layers: int = 2,    # depth of the mapping network (StyleGAN2: 8)
        channels: int = 256,        # channels at 4x4; halved per resolution
        min_channels: int = 32,     # floor for the halving
        norm: str = "none",         # only "none": demodulation does what a norm layer would
        output: str = "linear",     # "linear" (StyleGAN2), "tanh" or "sigmoid" (rescaled to [-1, 1])
    ):
        super().__init__()
        log2 = powers_of_two(resolution, "style G")
        if norm != "none":
            raise ValueError("the style G has no norm layers (its convolutions demodulate): set model.g_norm=none")
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; use one of {OUTPUTS}")
        w_dim = w_dim or z_dim
        self.resolution, self.z_dim, self.w_dim, self.output = resolution, z_dim, w_dim, output
        self.mapping = nn.Sequential(*[EqualLinear(z_dim if i == 0 else w_dim, w_dim, lr_mult=0.01, activate=True)
                                       for i in range(mapping_layers)])
        blocks, c_in = [], channels
        for i in range(log2 - 1):                     # resolutions 4, 8, ..., resolution
            c_out = max(channels >> i, min_channels)
            blocks.append(SynthesisBlock(c_in, c_out, w_dim, 4 << i))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.num_ws = sum(b.num_conv for b in blocks) + 1   # each toRGB shares the next conv's w; the last has its own
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.register_buffer("pl_mean", torch.zeros([]))   # path-length regularisation's running target (loss.py)

    def map(self, z: torch.Tensor, psi: float = 1.0, update_w_avg: bool = True) -> torch.Tensor:
        """w (N, w_dim) of z (N, z_dim), truncated toward w_avg by psi. In training mode each call
        also moves w_avg toward this batch's mean w (StyleGAN2's w_avg_beta = 0.995)."""
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)   # pixel norm: z on the sphere of radius sqrt(z_dim)
        w = self.mapping(z)
        if self.training and update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().mean(0).to(self.w_avg.dtype).lerp(self.w_avg, W_AVG_BETA))
        return truncate_w(w, self.w_avg, psi)

    def synthesis(self, ws: torch.Tensor, noise_mode: str | None = None) -> torch.Tensor:
        """Images (N, 3, H, W) from ws (N, num_ws, w_dim), or w (N, w_dim) for every layer.
        noise_mode: "random" (training's default), "const" (eval's: the fixed noise), "none"."""
        if ws.dim() == 2:
            ws = ws.unsqueeze(1).expand(-1, self.num_ws, -1)
        noise_mode = noise_mode or ("random" if self.training else "const")
        x = img = None
        i = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, i: i + block.num_conv + 1], noise_mode)
            i += block.num_conv
        if self.output == "tanh":
            return torch.tanh(img)
        return 2 * torch.sigmoid(img) - 1 if self.output == "sigmoid" else img

    def forward(self, z: torch.Tensor, psi: float = 1.0, mix_z: torch.Tensor | None = None, mix_layer: int | torch.Tensor | None = None,
                noise_mode: str | None = None, return_ws: bool = False):
        """Images of z. Style mixing: layers from `mix_layer` on (an int, or a tensor (N,) of one
        per sample) take mix_z's w instead. return_ws: also the ws fed to synthesis (path length)."""
        ws = self.map(z, psi).unsqueeze(1).expand(-1, self.num_ws, -1)           # (N, num_ws, w_dim)
        if mix_z is not None:
            ws = mix_styles(ws, self.map(mix_z, psi, update_w_avg=False), mix_layer)   # the reference leaves w_avg alone here too
        img = self.synthesis(ws, noise_mode)
        return (img, ws) if return_ws else img


def mix_styles(ws: torch.Tensor, w_other: torch.Tensor, layer: int | torch.Tensor) -> torch.Tensor:
    """ws (N, num_ws, w_dim) with the layers from `layer` on replaced by w_other (N, w_dim).
    `layer` = num_ws keeps ws as they are; a tensor gives each sample its own crossover."""
    index = torch.arange(ws.shape[1], device=ws.device)
    layer = torch.as_tensor(layer, device=ws.device).reshape(-1, 1)               # (N or 1, 1)
    return torch.where((index < layer).unsqueeze(-1), ws, w_other.unsqueeze(1))


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """x with one more channel: the standard deviation of each feature over a group of samples,
    averaged (Karras et al. 2018, sec. 3), so D can see a batch lacking variety. Groups are
    samples i, i + N/g, i + 2N/g, ... as the reference forms them; g is the largest divisor of
    N up to group_size, so any batch works."""
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)
    y = x.reshape(g, -1, c, h, w)                                   # (g, N/g, C, H, W)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))   # (N/g,)
    y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)                    # (N, 1, H, W): sample i gets group i % (N/g)
    return torch.cat([x, y], dim=1)


class DownBlock(nn.Module):
    """StyleGAN2's residual D block: conv3 -> pool -> conv3, plus a pooled 1x1 skip, over sqrt(2)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv0 = EqualConv2d(c_in, c_in, 3, activate=True)
        # The reference's second conv has stride 2 on a blurred input; pooling first then a
        # conv at the lower size costs the same and plays the same role.
        self.conv1 = EqualConv2d(c_in, c_out, 3, activate=True)
        self.skip = EqualConv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(F.avg_pool2d(x, 2))
        x = self.conv1(F.avg_pool2d(self.conv0(x), 2))
        return (x + skip) * math.sqrt(0.5)   # keeps the variance of a sum of two unit-variance paths


class StyleDiscriminator(nn.Module):
    def __init__(
        self,
        resolution: int = 32,       # input size in pixels: a power of two
        channels: int = 64,         # channels at the input resolution; doubled per block
        max_channels: int = 512,    # ceiling for the doubling
        mbstd_group: int = 4,       # minibatch-stddev group size (min(4, batch) in the reference)
    ):
        super().__init__()
        log2 = powers_of_two(resolution, "style D")
        self.mbstd_group = mbstd_group
        self.from_rgb = EqualConv2d(3, channels, 1, activate=True)
        blocks, c = [], channels
        for _ in range(log2 - 2):                       # resolution -> 4x4
            c_out = min(c * 2, max_channels)
            blocks.append(DownBlock(c, c_out))
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.conv = EqualConv2d(c + 1, c, 3, activate=True)
        self.fc = EqualLinear(c * 4 * 4, c, activate=True)
        self.score = EqualLinear(c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.from_rgb(x))                               # (N, c, 4, 4)
        x = self.conv(minibatch_stddev(x, self.mbstd_group))
        return self.score(self.fc(x.flatten(1))).squeeze(1)             # (N,)
