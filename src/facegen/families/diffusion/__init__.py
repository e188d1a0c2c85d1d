"""The diffusion core that ddpm, ldm and sd share: one sampler registry (samplers.py), one
denoising loss (loss.py: the DDPM and EDM objectives, min-SNR weighting, optional encoding to
latents and prompt conditioning), one denoising loop (loop.py: init_noise_sigma, classifier-free
guidance, per-sample noise streams) and EDM's preconditioning and Heun sampler (edm.py).

A family is its options, networks and generator on top of these: a new recipe is one edit here.
"""
