#!/usr/bin/env python3
"""Reference SDXL image-to-image and inpainting runs on the tiny SDXL pipeline
(tests/fixtures/pipeline/sdxl-tiny) with diffusers' StableDiffusionXLImg2ImgPipeline and
StableDiffusionXLInpaintPipeline (`requires_aesthetics_score` false, as SDXL base ships), for
kernels-tests/sdxl.rs:

    tests/fixtures/pipeline/sdxl-inpaint-unet/   a tiny 9-channel SDXL U-Net (latents, mask,
                                                 masked-image latents; text_time), f16
    tests/fixtures/pipeline/sdxl-img2img-golden.safetensors
        images [1, 32, 32, 3] in [0, 1], seed 42 (the VAE posterior sample, then the noise,
        then any step noise), prompt and negative prompt, guidance 5, input
        tests/fixtures/pipeline/img2img-input.png, mask inpaint-mask.png:
        - img_euler_s06: img2img, SDXL's Euler, strength 0.6, 4 steps
        - img_dpmk_s08: img2img, DPM++ 2M Karras, strength 0.8, 5 steps
        - inp_s075, inp_s1: inpainting with the 4-channel U-Net (known region blended back
          every step), Euler, strength 0.75 and 1.0, 4 steps
        - inp9_s1: the 9-channel U-Net, strength 1.0, 4 steps

    .venv/bin/python tools/make_sdxl_img2img_fixture.py   (after make_pipeline_fixture_sdxl.py
                                                          and make_inpaint_fixture.py)
"""
from pathlib import Path

import torch
from diffusers import (DPMSolverMultistepScheduler, StableDiffusionXLImg2ImgPipeline,
                       StableDiffusionXLInpaintPipeline, UNet2DConditionModel)
from PIL import Image
from safetensors.torch import save_file

from fixture_common import clip_tokenizer, perturb

root = Path("tests/fixtures/pipeline")
torch.manual_seed(31)
base = StableDiffusionXLImg2ImgPipeline.from_pretrained(root / "sdxl-tiny", tokenizer=clip_tokenizer(),
                                                        tokenizer_2=clip_tokenizer("!"), torch_dtype=torch.float32,
                                                        requires_aesthetics_score=False)
base.set_progress_bar_config(disable=True)
parts = dict(vae=base.vae, text_encoder=base.text_encoder, text_encoder_2=base.text_encoder_2,
             tokenizer=base.tokenizer, tokenizer_2=base.tokenizer_2)
image = Image.open(root / "img2img-input.png").convert("RGB")
mask = Image.open(root / "inpaint-mask.png")

# A small 9-channel SDXL U-Net: the tiny SDXL's conditioning widths, fewer channels.
unet9 = UNet2DConditionModel(sample_size=8, in_channels=9, out_channels=4, layers_per_block=1, norm_num_groups=8,
                             block_out_channels=(16, 32), cross_attention_dim=72, attention_head_dim=(2, 4),
                             use_linear_projection=True, transformer_layers_per_block=(1, 2),
                             down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                             up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                             addition_embed_type="text_time", addition_time_embed_dim=8,
                             projection_class_embeddings_input_dim=24 + 6 * 8)
perturb(unet9, half=True)
unet9.to(torch.float16).save_pretrained(root / "sdxl-inpaint-unet", safe_serialization=True)
unet9 = UNet2DConditionModel.from_pretrained(root / "sdxl-inpaint-unet", torch_dtype=torch.float32).eval()

kw = dict(prompt="a red sneaker on a white table", negative_prompt="blurry", guidance_scale=5.0, height=32,
          width=32, output_type="np")
euler = base.scheduler
dpmk = DPMSolverMultistepScheduler.from_config(euler.config, use_karras_sigmas=True)


def img2img(scheduler, **extra):
    p = StableDiffusionXLImg2ImgPipeline(**parts, unet=base.unet, scheduler=scheduler,
                                         requires_aesthetics_score=False)
    p.set_progress_bar_config(disable=True)
    return p(**kw, image=image, generator=torch.Generator("cpu").manual_seed(42), **extra).images


def inpaint(unet, **extra):
    p = StableDiffusionXLInpaintPipeline(**parts, unet=unet, scheduler=euler, requires_aesthetics_score=False)
    p.set_progress_bar_config(disable=True)
    return p(**kw, image=image, mask_image=mask, generator=torch.Generator("cpu").manual_seed(42), **extra).images


out = {}
with torch.no_grad():
    out["img_euler_s06"] = img2img(euler, strength=0.6, num_inference_steps=4)
    out["img_dpmk_s08"] = img2img(dpmk, strength=0.8, num_inference_steps=5)
    out["inp_s075"] = inpaint(base.unet, strength=0.75, num_inference_steps=4)
    out["inp_s1"] = inpaint(base.unet, strength=1.0, num_inference_steps=4)
    out["inp9_s1"] = inpaint(unet9, strength=1.0, num_inference_steps=4)
out = {k: torch.from_numpy(v).contiguous() for k, v in out.items()}
save_file(out, root / "sdxl-img2img-golden.safetensors")
print({k: tuple(v.shape) for k, v in out.items()})
