#!/usr/bin/env python3
"""diffusers' 4× upscale of one image with num_images_per_prompt=2 (the CLI's --batch-size)
on the tiny random upscaler (tests/fixtures/pipeline/upscaler-tiny, upscale-input.png):

    tests/fixtures/pipeline/upscale-batch-golden.safetensors
        image [2, 48, 80, 3]: "a red sneaker", negative "blurry", noise level 20, 4 steps,
            guidance 9, seed 42 (the low-res image's noise drawn once, then latents [2, 4, 12, 20])

    .venv/bin/python tools/make_upscale_batch_fixture.py
"""
from pathlib import Path

import torch
from diffusers import StableDiffusionUpscalePipeline
from PIL import Image
from safetensors.torch import save_file

from fixture_common import clip_tokenizer

root = Path("tests/fixtures/pipeline")
pipe = StableDiffusionUpscalePipeline.from_pretrained(root / "upscaler-tiny", tokenizer=clip_tokenizer("!"))
pipe.set_progress_bar_config(disable=True)
with torch.no_grad():
    img = pipe(prompt="a red sneaker", negative_prompt="blurry", image=Image.open(root / "upscale-input.png"),
               num_inference_steps=4, guidance_scale=9.0, noise_level=20, num_images_per_prompt=2,
               generator=torch.Generator().manual_seed(42), output_type="np").images
save_file({"image": torch.from_numpy(img).contiguous().float()}, root / "upscale-batch-golden.safetensors")
print(img.shape)
