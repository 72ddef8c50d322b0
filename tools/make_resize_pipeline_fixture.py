#!/usr/bin/env python3
"""diffusers' runs on inputs whose size is no multiple of the VAE factor, which its
VaeImageProcessor resizes (Pillow, Lanczos / bicubic) and the engine's CLI must resize alike:

    tests/fixtures/pipeline/img2img-input-odd.png     37×35 (→ 36×32, Lanczos; factor 4)
    tests/fixtures/pipeline/inpaint-mask-odd.png      37×35 RGB mask (→ resized, then "L")
    tests/fixtures/pipeline/upscale-input-odd.png     22×13 (→ 20×12, bicubic)
    tests/fixtures/pipeline/resize-golden.safetensors
        img2img [1, 32, 36, 3]: sd1-tiny img2img, DDIM, strength 0.6, 4 steps, guidance 7.5,
            seed 42 (the settings of img2img-golden's ddim_s06)
        inpaint [1, 32, 36, 3]: sd1-tiny (a 4-channel U-Net) StableDiffusionInpaintPipeline with
            that image and mask at 36×32, DDIM, strength 1, 4 steps, seed 42
        upscale [1, 48, 80, 3]: upscaler-tiny, the settings of upscale-golden's image_f32

    .venv/bin/python tools/make_resize_pipeline_fixture.py
"""
from pathlib import Path

import numpy as np
import torch
from diffusers import (DDIMScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline,
                       StableDiffusionUpscalePipeline)
from PIL import Image
from safetensors.torch import save_file

from fixture_common import clip_tokenizer

root = Path("tests/fixtures/pipeline")
rng = np.random.default_rng(21)
yy, xx = np.mgrid[0:35, 0:37]
img = np.stack([128 + 100 * np.sin(xx / 4), 128 + 100 * np.cos(yy / 6), 255 * (xx + yy) / 70], -1)
img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
Image.fromarray(img).save(root / "img2img-input-odd.png")
mask = np.zeros((35, 37, 3), np.uint8)
mask[6:27, 14:33] = (255, 230, 20)  # a coloured mask: resized in RGB, then made "L"
Image.fromarray(mask).save(root / "inpaint-mask-odd.png")
low = (rng.random((13, 22, 3)) * 255).astype(np.uint8)
Image.fromarray(low).save(root / "upscale-input-odd.png")

out = {}
init = Image.open(root / "img2img-input-odd.png")
kw = dict(prompt="a red sneaker on a white table", negative_prompt="blurry", num_inference_steps=4,
          guidance_scale=7.5, output_type="np")
pipe = StableDiffusionImg2ImgPipeline.from_pretrained(root / "sd1-tiny", tokenizer=clip_tokenizer(), safety_checker=None,
                                                      feature_extractor=None, requires_safety_checker=False)
pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
pipe.set_progress_bar_config(disable=True)
with torch.no_grad():
    out["img2img"] = torch.from_numpy(pipe(**kw, image=init, strength=0.6,
                                           generator=torch.Generator().manual_seed(42)).images)
    inp = StableDiffusionInpaintPipeline(**pipe.components)
    inp.set_progress_bar_config(disable=True)
    out["inpaint"] = torch.from_numpy(inp(**kw, image=init, mask_image=Image.open(root / "inpaint-mask-odd.png"),
                                          height=32, width=36, strength=1.0,
                                          generator=torch.Generator().manual_seed(42)).images)
up = StableDiffusionUpscalePipeline.from_pretrained(root / "upscaler-tiny", tokenizer=clip_tokenizer("!"))
up.set_progress_bar_config(disable=True)
with torch.no_grad():
    out["upscale"] = torch.from_numpy(up(prompt="a red sneaker", negative_prompt="blurry",
                                         image=Image.open(root / "upscale-input-odd.png"), num_inference_steps=4,
                                         guidance_scale=9.0, noise_level=20, output_type="np",
                                         generator=torch.Generator().manual_seed(42)).images)
save_file({k: v.contiguous().float() for k, v in out.items()}, root / "resize-golden.safetensors")
print({k: tuple(v.shape) for k, v in out.items()})
