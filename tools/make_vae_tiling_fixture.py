#!/usr/bin/env python3
"""diffusers' tiled VAE (AutoencoderKL.enable_tiling) at a small tile, for
kernels-tests/vae_tiling.rs: the tiny SD 1 pipeline's VAE (4×) with tile_sample_min_size 32
px (tile_latent_min_size 8), so a 128² image is 6 × 6 tiles.

    tests/fixtures/pipeline/vae-tiling-golden.safetensors
        latents [1, 4, 32, 32] and [2, 4, 24, 40] (unscaled), decoded_* their tiled decodes;
        image [1, 3, 128, 128] in [−1, 1], enc_mean / enc_logvar its tiled encode's posterior;
        t2i_128 [1, 128, 128, 3]: StableDiffusionPipeline (sd1-tiny) with tiling, 128×128,
            seed 42, 3 steps, guidance 7.5, the sneaker prompt and "blurry";
        i2i_128 [1, 128, 128, 3]: StableDiffusionImg2ImgPipeline with tiling, the init image
            img2img-input.png resized to 128² (bicubic, PIL), strength 0.6, seed 42, 4 steps.

    .venv/bin/python tools/make_vae_tiling_fixture.py
"""
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from PIL import Image
from safetensors.torch import save_file

from fixture_common import clip_tokenizer

root = Path("tests/fixtures/pipeline")
pipe = StableDiffusionPipeline.from_pretrained(root / "sd1-tiny", tokenizer=clip_tokenizer(), safety_checker=None,
                                               feature_extractor=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
vae = pipe.vae
vae.enable_tiling()
vae.tile_sample_min_size = 32
vae.tile_latent_min_size = 8
g = torch.Generator().manual_seed(11)
out = {}
with torch.no_grad():
    for name, shape in [("sq", (1, 4, 32, 32)), ("wide2", (2, 4, 24, 40))]:
        z = torch.randn(shape, generator=g)
        out[f"latents_{name}"] = z
        out[f"decoded_{name}"] = vae.decode(z).sample
    x = torch.rand(1, 3, 128, 128, generator=g) * 2 - 1
    out["image"] = x
    post = vae.encode(x).latent_dist
    out["enc_mean"], out["enc_logvar"] = post.mean, post.logvar
    kw = dict(prompt="a red sneaker on a white table", negative_prompt="blurry", guidance_scale=7.5,
              output_type="np")
    out["t2i_128"] = torch.from_numpy(pipe(**kw, num_inference_steps=3, height=128, width=128,
                                           generator=torch.Generator().manual_seed(42)).images)
    init = Image.open(root / "img2img-input.png").convert("RGB").resize((128, 128), Image.BICUBIC)
    init.save(root / "img2img-input-128.png")
    i2i = StableDiffusionImg2ImgPipeline(**{k: v for k, v in pipe.components.items() if k != "image_encoder"})
    i2i.set_progress_bar_config(disable=True)
    out["i2i_128"] = torch.from_numpy(i2i(**kw, image=init, strength=0.6, num_inference_steps=4,
                                          generator=torch.Generator().manual_seed(42)).images)
save_file({k: v.contiguous() for k, v in out.items()}, root / "vae-tiling-golden.safetensors")
print({k: tuple(v.shape) for k, v in out.items()})
