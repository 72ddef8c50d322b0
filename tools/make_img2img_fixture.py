#!/usr/bin/env python3
"""Reference image-to-image runs of the tiny SD 1-like pipeline (tests/fixtures/pipeline/sd1-tiny)
with diffusers' StableDiffusionImg2ImgPipeline, for kernels-tests/pipeline.rs:

    tests/fixtures/pipeline/img2img-input.png     32×32 8-bit RGB input
    tests/fixtures/pipeline/img2img-golden.safetensors
        <case>: the output image [1, 32, 32, 3] in [0, 1] for each case below (seeded CPU
        generator: the VAE posterior sample, then the noise, then any step noise)

    .venv/bin/python tools/make_img2img_fixture.py
"""
from pathlib import Path

import numpy as np
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, PNDMScheduler,
                       StableDiffusionImg2ImgPipeline)
from PIL import Image
from safetensors.torch import save_file

from fixture_common import clip_tokenizer

root = Path("tests/fixtures/pipeline")
tok = clip_tokenizer()
pipe = StableDiffusionImg2ImgPipeline.from_pretrained(root / "sd1-tiny", tokenizer=tok, safety_checker=None,
                                                      feature_extractor=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:32, 0:32]
img = np.stack([128 + 100 * np.sin(xx / 5), 128 + 100 * np.cos(yy / 7), 255 * (xx + yy) / 62], -1)
img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
Image.fromarray(img).save(root / "img2img-input.png")
init = Image.open(root / "img2img-input.png").convert("RGB")
cfg = pipe.scheduler.config
cases = {
    "ddim_s06": (DDIMScheduler.from_config(cfg), 0.6, 4),
    "pndm_s075": (PNDMScheduler.from_config(cfg, skip_prk_steps=True), 0.75, 4),
    "euler_a_s05": (EulerAncestralDiscreteScheduler.from_config(cfg), 0.5, 6),
    "dpm_s08": (DPMSolverMultistepScheduler.from_config(cfg), 0.8, 5),
}
out = {}
for name, (sched, strength, steps) in cases.items():
    pipe.scheduler = sched
    with torch.no_grad():
        out[name] = torch.from_numpy(pipe(prompt="a red sneaker on a white table", negative_prompt="blurry", image=init,
                                          strength=strength, num_inference_steps=steps, guidance_scale=7.5,
                                          generator=torch.Generator("cpu").manual_seed(42),
                                          output_type="np").images).contiguous()
    print(name, "timesteps", [int(t) for t in pipe.scheduler.timesteps])
save_file(out, root / "img2img-golden.safetensors")

# Text-to-image with PNDM (SD 1.5's default: its PLMS schedule has one timestep more than
# `num_inference_steps`, all of which run), from given latents: txt2img_pndm, latents_pndm.
from diffusers import StableDiffusionPipeline
t2i = StableDiffusionPipeline(**{k: v for k, v in pipe.components.items() if k != "image_encoder"})
t2i.scheduler = PNDMScheduler.from_config(cfg, skip_prk_steps=True)
t2i.set_progress_bar_config(disable=True)
lat = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9))
with torch.no_grad():
    out["txt2img_pndm"] = torch.from_numpy(t2i(prompt="a red sneaker on a white table", negative_prompt="blurry",
                                               num_inference_steps=5, guidance_scale=7.5, height=32, width=32,
                                               latents=lat.clone(), output_type="np").images).contiguous()
out["latents_pndm"] = lat
save_file(out, root / "img2img-golden.safetensors")
print("txt2img pndm timesteps", [int(t) for t in t2i.scheduler.timesteps])

# A batch: num_images_per_prompt=2 (one seeded draw of [2, 4, 8, 8]), DDIM, 3 steps: batch2_seed7.
t2i.scheduler = DDIMScheduler.from_config(cfg)
with torch.no_grad():
    out["batch2_seed7"] = torch.from_numpy(t2i(prompt="a red sneaker on a white table", negative_prompt="blurry",
                                               num_images_per_prompt=2, num_inference_steps=3, guidance_scale=7.5,
                                               height=32, width=32, generator=torch.Generator("cpu").manual_seed(7),
                                               output_type="np").images).contiguous()
save_file(out, root / "img2img-golden.safetensors")
print("batch", tuple(out["batch2_seed7"].shape))

# Batches with an init image: img2img and 4-channel inpainting, num_images_per_prompt=2, seed 42
# (the image encoded once and repeated, noise [2, 4, 8, 8]); Euler-a for per-step batch noise.
i2i = StableDiffusionImg2ImgPipeline(**{k: v for k, v in pipe.components.items() if k != "image_encoder"})
i2i.scheduler = EulerAncestralDiscreteScheduler.from_config(cfg)
i2i.set_progress_bar_config(disable=True)
with torch.no_grad():
    out["img2img_batch2_euler_a"] = torch.from_numpy(i2i(
        prompt="a red sneaker on a white table", negative_prompt="blurry", image=init, strength=0.5,
        num_inference_steps=6, guidance_scale=7.5, num_images_per_prompt=2,
        generator=torch.Generator("cpu").manual_seed(42), output_type="np").images).contiguous()
save_file(out, root / "img2img-golden.safetensors")
print("img2img batch", tuple(out["img2img_batch2_euler_a"].shape))
