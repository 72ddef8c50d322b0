#!/usr/bin/env python3
"""Builds a tiny random-weight AutoencoderKL with diffusers (the reference) and dumps one
decode, for kernels-tests/vae.rs:

    tests/fixtures/vae/<name>/config.json, diffusion_pytorch_model.safetensors (every tensor
    perturbed: default init hides a dropped bias), golden.safetensors with
    latents [1, 4, h, w] (NCHW, already divided by scaling_factor as pipelines do before
    decode) and image = vae.decode(latents).sample [1, 3, H, W].

    .venv/bin/python tools/make_vae_fixtures.py
"""
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

torch.manual_seed(0)
CONFIGS = {
    # Three blocks: downsampling factor 4 (SD's four blocks give 8), mid-block attention with
    # a single 64-wide head (SD: 512), 8 groups (SD: 32).
    "f4-tiny": dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                    block_out_channels=(32, 48, 64), norm_num_groups=8,
                    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                    scaling_factor=0.18215),
}
for name, kw in CONFIGS.items():
    out = Path("tests/fixtures/vae") / name
    out.mkdir(parents=True, exist_ok=True)
    vae = AutoencoderKL(**kw).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    vae.save_pretrained(out, safe_serialization=True)
    latents = torch.randn(1, 4, 6, 7)
    # A larger decode for the banded paths (activations bigger than a test device's binding).
    big = torch.randn(1, 4, 24, 20)
    with torch.no_grad():
        image = vae.decode(latents).sample
        image_big = vae.decode(big).sample
    save_file({"latents": latents.contiguous(), "image": image.contiguous(),
               "latents_big": big.contiguous(), "image_big": image_big.contiguous()}, out / "golden.safetensors")
    print(name, tuple(image.shape), sum(p.numel() for p in vae.parameters()), "parameters")

# The encoder (img2img / inpainting): posterior mean and std of one image, and a sample of it
# with a seeded CPU generator (diffusers' `latent_dist.sample(generator)`), from the saved
# weights above: tests/fixtures/vae/f4-tiny/encode_golden.safetensors. Odd sizes (28×36 px)
# exercise the downsamplers' one-sided padding.
out = Path("tests/fixtures/vae/f4-tiny")
vae = AutoencoderKL.from_pretrained(out).eval()
image = torch.rand(1, 3, 28, 36, generator=torch.Generator().manual_seed(11)) * 2 - 1
with torch.no_grad():
    dist = vae.encode(image).latent_dist
    sample = dist.sample(generator=torch.Generator().manual_seed(3))
save_file({"image": image.contiguous(), "mean": dist.mean.contiguous(), "std": dist.std.contiguous(),
           "sample_seed3": sample.contiguous()}, out / "encode_golden.safetensors")
print("encode", tuple(dist.mean.shape))
