"""LPIPS, when it can be had: the `lpips` package plus torchvision's VGG weights.

Both are optional. `lpips` needs torchvision and downloads the VGG backbone on first use,
so offline (or without torchvision) `load_lpips` returns None and the autoencoder loss
uses discriminator feature matching instead. The FID Inception network is never used as a
perceptual loss: training on the features the metric uses would game the metric.
"""

from __future__ import annotations

import warnings

from torch import nn


def load_lpips(required: bool = False) -> nn.Module | None:
    """A frozen LPIPS-VGG distance (b, 3, h, w) x2 in [-1, 1] -> (b, 1, 1, 1), or None."""
    try:
        import lpips  # optional: pip install 'facegen[lpips]' (needs internet once for VGG)

        net = lpips.LPIPS(net="vgg", verbose=False)
    except Exception as e:  # ImportError, or the VGG download failing offline
        if required:
            from facegen.utils import FacegenError

            raise FacegenError(f"model.perceptual=lpips but LPIPS cannot be loaded ({type(e).__name__}: {e}); "
                               "pip install 'facegen[lpips]' with internet access, or set model.perceptual=features") from None
        warnings.warn(f"LPIPS unavailable ({type(e).__name__}); using discriminator feature matching as the perceptual loss")
        return None
    return net.eval().requires_grad_(False)
