#!/usr/bin/env python3
"""A reference text-to-image run of the tiny SD 1-like pipeline (tests/fixtures/pipeline/sd1-tiny)
large enough that its activations outgrow a small storage-binding limit, for
kernels-tests/pipeline.rs (txt2img_within_small_binding_limits_matches_diffusers):

    tests/fixtures/pipeline/split-golden.safetensors
        batch2_96x64: diffusers' StableDiffusionPipeline, 96×64 px (24×16 latents), 2 images per
        prompt from torch.Generator("cpu").manual_seed(11), DDIM 3 steps, guidance 7.5:
        the images [2, 64, 96, 3] in [0, 1]

    .venv/bin/python tools/make_split_fixture.py
"""
from pathlib import Path

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from safetensors.torch import save_file

from fixture_common import clip_tokenizer

root = Path("tests/fixtures/pipeline")
pipe = StableDiffusionPipeline.from_pretrained(root / "sd1-tiny", tokenizer=clip_tokenizer(), safety_checker=None,
                                               feature_extractor=None, requires_safety_checker=False)
pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
pipe.set_progress_bar_config(disable=True)
with torch.no_grad():
    img = pipe(prompt="a red sneaker on a white table", negative_prompt="blurry", num_images_per_prompt=2,
               num_inference_steps=3, guidance_scale=7.5, height=64, width=96,
               generator=torch.Generator("cpu").manual_seed(11), output_type="np").images
save_file({"batch2_96x64": torch.from_numpy(img).contiguous()}, root / "split-golden.safetensors")
print("images", img.shape, float(img.min()), float(img.max()))
