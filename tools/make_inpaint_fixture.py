#!/usr/bin/env python3
"""Reference inpainting runs with diffusers' StableDiffusionInpaintPipeline, for
kernels-tests/pipeline.rs, on the tiny SD 1-like pipeline (tests/fixtures/pipeline/sd1-tiny):

    tests/fixtures/pipeline/inpaint-mask.png       32×32, white = repaint (a rectangle)
    tests/fixtures/pipeline/inpaint-unet/          a tiny 9-channel inpainting U-Net (latents,
                                                   mask, masked-image latents), f16
    tests/fixtures/pipeline/inpaint-golden.safetensors
        legacy_s1, legacy_s075: the ordinary 4-channel U-Net (known region blended back in
        latent space every step), strength 1.0 and 0.75; unet9_s1: the 9-channel U-Net.
        Images [1, 32, 32, 3] in [0, 1]; init image tests/fixtures/pipeline/img2img-input.png;
        4 DDIM steps, guidance 7.5, torch.Generator("cpu").manual_seed(42).

    .venv/bin/python tools/make_inpaint_fixture.py   (after tools/make_img2img_fixture.py)
"""
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
from PIL import Image
from safetensors.torch import save_file
from fixture_common import clip_tokenizer

root = Path("tests/fixtures/pipeline")
tok = clip_tokenizer()
pipe = StableDiffusionInpaintPipeline.from_pretrained(root / "sd1-tiny", tokenizer=tok, safety_checker=None,
                                                      feature_extractor=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
mask = np.zeros((32, 32), np.uint8)
mask[8:22, 6:27] = 255
Image.fromarray(mask).save(root / "inpaint-mask.png")
image = Image.open(root / "img2img-input.png").convert("RGB")
mask_img = Image.open(root / "inpaint-mask.png")

torch.manual_seed(5)
cfg = dict(pipe.unet.config)
cfg["in_channels"] = 9
unet9 = UNet2DConditionModel.from_config(cfg).eval()
with torch.no_grad():
    for p in unet9.parameters():
        p.add_(torch.randn_like(p) * 0.05)
unet9.to(torch.float16).save_pretrained(root / "inpaint-unet", safe_serialization=True)
unet9 = UNet2DConditionModel.from_pretrained(root / "inpaint-unet", torch_dtype=torch.float32).eval()

kw = dict(prompt="a red sneaker on a white table", negative_prompt="blurry", image=image, mask_image=mask_img,
          num_inference_steps=4, guidance_scale=7.5, height=32, width=32, output_type="np")
out = {}
with torch.no_grad():
    for name, strength in [("legacy_s1", 1.0), ("legacy_s075", 0.75)]:
        out[name] = torch.from_numpy(pipe(**kw, strength=strength,
                                          generator=torch.Generator("cpu").manual_seed(42)).images).contiguous()
    pipe9 = StableDiffusionInpaintPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=tok, unet=unet9,
                                           scheduler=DDIMScheduler.from_config(pipe.scheduler.config),
                                           safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe9.set_progress_bar_config(disable=True)
    out["unet9_s1"] = torch.from_numpy(pipe9(**kw, strength=1.0,
                                             generator=torch.Generator("cpu").manual_seed(42)).images).contiguous()
save_file(out, root / "inpaint-golden.safetensors")
print({k: tuple(v.shape) for k, v in out.items()})

# A batch of 2 with the 4-channel model at strength 0.75 (image and masked image encoded once,
# noise [2, 4, 8, 8]): legacy_s075_batch2.
with torch.no_grad():
    out["legacy_s075_batch2"] = torch.from_numpy(pipe(**kw, strength=0.75, num_images_per_prompt=2,
                                                      generator=torch.Generator("cpu").manual_seed(42)).images).contiguous()
save_file(out, root / "inpaint-golden.safetensors")
print("batch", tuple(out["legacy_s075_batch2"].shape))
