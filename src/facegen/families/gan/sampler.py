"""Sampling a trained GAN: a seed gives a z, one forward pass of G gives the face; truncation
(`psi`, 0 < psi <= 1) pulls each face toward the average one.

Truncation trades variety for typical, cleaner faces, the "truncation trick" of BigGAN (Brock
et al. 2019, sec. 3.1) and StyleGAN (Karras et al. 2019). Where it acts depends on G:
  - a generator with a mapping network (g_arch "style", `G.truncation_space == "w"`) truncates
    in w, as StyleGAN does: w' = w_avg + psi * (w - w_avg) (`truncate_w`), with w_avg the
    average w that G tracked while training (psi -> 0 gives that average face for every seed).
  - the others (dcgan, resnet) have no mapping network, so the same pull is applied to z, whose
    mean is 0: z' = psi * z (`truncate`). This is the weaker form: G(0) need not look like an
    average face, whereas w_avg is by construction the centre of the faces G makes.
BigGAN instead resamples the components of z beyond a threshold (a truncated normal).
Pulling toward the mean is chosen because it keeps a face a function of its seed alone:
the same seed is the same face at every psi, only less extreme, and psi = 1 is exactly
the untruncated sampler.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import Module as GNet  # any G with .z_dim and .resolution


def truncate(z: torch.Tensor, psi: float) -> torch.Tensor:
    """Truncation toward the mean of z (see above): psi = 1 is exact (x * 1.0), so the
    untruncated face bit for bit."""
    return psi * z


def truncate_w(w: torch.Tensor, w_avg: torch.Tensor, psi: float) -> torch.Tensor:
    """Truncation toward the average w: w_avg + psi * (w - w_avg). psi = 1 returns w itself,
    so the untruncated face bit for bit; psi = 0 is w_avg for every row."""
    return w if psi == 1 else w_avg + psi * (w - w_avg)


@torch.no_grad()
def standing_stats(G: GNet, n: int = 256, batch: int = 64) -> GNet:
    """Recompute G's batch-norm statistics as the average over n fresh z (in place; returns G).

    The loop averages G's weights (EMA) but not its batch-norm running statistics, which
    belong to the raw weights; re-measuring them for the weights actually exported is
    BigGAN's "standing statistics" (Brock et al. 2019, appendix C.1). Its own seeded z keep
    the export deterministic and leave the training RNG alone."""
    norms = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return G
    was_training, device = G.training, next(G.parameters()).device
    g = torch.Generator().manual_seed(0)
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                          # None: a cumulative average over the batches below
    G.train()
    for i in range(0, n, batch):
        G(torch.randn(min(batch, n - i), G.z_dim, generator=g).to(device))
    for m in norms:
        m.momentum = 0.1                           # torch's default, as the nets were built
    return G.train(was_training)
