"""What an autoencoder is judged by, on faces it never trained on, and the latent scale.

- Latent scale (Rombach et al. 2022, sec. 4.3.2 / appendix G): the second stage trains on
  z * scale with scale = 1 / std(z) over training images, so its latents have unit variance
  like the diffusion noise. Computed here from data and stored in the exported VAE's
  `scaling_factor`, where diffusers pipelines read it.
- Reconstruction PSNR and SSIM (torchmetrics, images in [0, 1]) and rFID (FID between the
  holdout faces and their reconstructions, through facegen.metrics when its Inception
  extractor is installed) on the holdout split.
Both take the first n of the faces they are given; the export gives them faces spread over
their split (`FaceStore.subset`), since a merged store lists its first source first.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL

from facegen.families.ae.sampler import reconstruct
from facegen.utils import from_uint8, make_grid, to_uint8


def batches(pixels: np.ndarray, n: int, batch: int = 32):
    """uint8 (N, H, W, 3) -> float (b, 3, H, W) in [-1, 1], the first n images in order (pass a subset
    spread over a split, not the split: FaceStore.subset)."""
    for i in range(0, min(n, len(pixels)), batch):
        yield from_uint8(pixels[i : min(i + batch, n)])


@torch.no_grad()
def latent_scale(vae: AutoencoderKL, pixels: np.ndarray, n: int = 512, device="cpu") -> float:
    """1 / std of posterior samples z over the first n images (all latent elements pooled)."""
    total, total_sq, count = 0.0, 0.0, 0
    g = torch.Generator(device).manual_seed(0)  # the posterior sample is drawn from its own generator: no global RNG use
    for x in batches(pixels, n):
        z = vae.encode(x.to(device)).latent_dist.sample(generator=g).double()
        total, total_sq, count = total + z.sum().item(), total_sq + z.square().sum().item(), count + z.numel()
    var = total_sq / count - (total / count) ** 2
    return float(1.0 / max(var, 1e-12) ** 0.5)


@torch.no_grad()
def reconstruction_metrics(vae: AutoencoderKL, pixels: np.ndarray, n: int = 256, device="cpu") -> tuple[dict, np.ndarray]:
    """PSNR, SSIM and rFID over the first n images, plus a grid (originals over reconstructions)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    real, fake, psnr, ssim = [], [], [], []
    for x in batches(pixels, n):
        y = reconstruct(vae, x.to(device)).cpu()
        a, b = (x + 1) / 2, (y + 1) / 2  # [0, 1]
        psnr.append(peak_signal_noise_ratio(b, a, data_range=1.0, reduction="none", dim=(1, 2, 3)))
        ssim.append(structural_similarity_index_measure(b, a, data_range=1.0, reduction="none"))
        real.append(to_uint8(x))
        fake.append(to_uint8(y))
    real, fake = np.concatenate(real), np.concatenate(fake)
    metrics = {"images": len(real), "psnr": float(torch.cat(psnr).mean()), "ssim": float(torch.cat(ssim).mean())}
    metrics.update(rfid(real, fake))
    k = min(8, len(real))
    return metrics, make_grid(np.concatenate([real[:k], fake[:k]]), nrow=k)


def rfid(real: np.ndarray, fake: np.ndarray) -> dict:
    """rFID through facegen.metrics (the bundled Inception pool features), or why it is missing.

    Below 2,048 faces per set the covariances are rank-deficient and the figure is biased
    upwards: comparable only between runs at the same count (hence `rfid_images`).
    """
    try:
        from facegen.metrics.inception import extract_features
        from facegen.metrics.registry import measure
    except ImportError as e:
        return {"rfid": None, "rfid_note": f"facegen.metrics Inception features unavailable ({e})"}
    try:
        # the registry's FID (reconstructions as the generated set), without its bootstrap interval
        score = measure(["fid"], extract_features(fake, progress=False), extract_features(real, progress=False),
                        fid={"bootstrap_rounds": 0})["fid"]["value"]
    except Exception as e:  # e.g. the Inception network file missing
        return {"rfid": None, "rfid_note": f"{type(e).__name__}: {e}"}
    return {"rfid": float(score), "rfid_images": len(real)}
