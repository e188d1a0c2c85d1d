"""TEMPORARY development adapter until facegen.sample lands (replaced at integration)."""
from __future__ import annotations
import torch
from facegen.utils import to_uint8

def generate(generator, seeds, **options):
    return to_uint8(generator.decode(generator.initial_noise(seeds), seeds, **options))

def morph(generator, a, b, frames, **options):
    za, zb = generator.initial_noise([a, b])
    t = torch.linspace(0, 1, frames)
    flat_a, flat_b = za.flatten(), zb.flatten()
    omega = torch.arccos((flat_a @ flat_b / (flat_a.norm() * flat_b.norm())).clamp(-1, 1))
    z = (torch.sin((1 - t)[:, None] * omega) * flat_a + torch.sin(t[:, None] * omega) * flat_b) / torch.sin(omega)
    z = z.view(frames, *za.shape)
    return to_uint8(generator.decode(z, [a] * frames, **options))
