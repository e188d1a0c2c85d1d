"""A tiny Stable Diffusion with random weights, written as a real StableDiffusionPipeline
folder: the real diffusers/transformers classes from small configs, and a byte-level CLIP
tokenizer built offline. Tests and CPU smoke runs pass it as --pretrained, exactly where a
GPU user passes CompVis/stable-diffusion-v1-4, so both go through the same code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from facegen.utils import atomic_dir


def write_tiny_pipeline(out: str | Path, resolution: int = 32, seed: int = 0) -> Path:
    """Write the folder (about 1 MB, a second on CPU) and return its path."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = byte_level_clip_tokenizer(max_length=16)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    vae = AutoencoderKL(  # four blocks = three halvings: 8 pixels per latent cell, as in SD
        block_out_channels=(8, 16, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, sample_size=resolution,
    )
    unet = UNet2DConditionModel(
        sample_size=resolution // 8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )
    scheduler = PNDMScheduler(  # SD v1.4's own scheduler config
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1,
    )
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    with atomic_dir(out, overwrite=True) as tmp:
        pipe.save_pretrained(tmp)
    return Path(out)


def byte_level_clip_tokenizer(max_length: int = 16):
    """A CLIPTokenizer whose vocabulary is the 256 byte symbols (alone and word-final) and no
    merges: every text tokenizes, one token per byte, with no download."""
    from transformers import CLIPTokenizer

    symbols = _bytes_to_unicode()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"])}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's printable stand-in for each byte (Radford et al. 2019, encoder.py)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]
