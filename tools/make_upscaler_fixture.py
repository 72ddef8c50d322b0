#!/usr/bin/env python3
"""A tiny random-weight StableDiffusionUpscalePipeline (the 4× upscaler's structure) and
reference runs, for kernels-tests/upscale.rs:

    tests/fixtures/pipeline/upscaler-tiny/   model_index.json, unet (7 input channels, the
        noise level as a class label out of 351, only_cross_attention on the attention levels
        but the last), vae (the tiny SD 1 VAE, 4×, scaling_factor 0.08333 as the upscaler's),
        text_encoder + tokenizer (the tiny SD 2 ones), scheduler (DDIM, v-prediction),
        low_res_scheduler (DDPM, linear betas 1e-4..0.02), max_noise_level 350
    tests/fixtures/pipeline/upscale-input.png   20×12 low-res input (no multiple of 64)
    tests/fixtures/pipeline/upscale-golden.safetensors
        image_f32 [1, 48, 80, 3]: prompt "a red sneaker", negative "blurry", noise_level 20,
            4 steps, guidance 9, seed 42; image_f16: the same with every component in f16
            (diffusers' own fp16 run); image_nl100: noise_level 100; image_latents: with
            `latents` [1, 4, 12, 20] given (seed 5's draw) and seed 42, whose first draw is
            `noise` [1, 3, 12, 20] (the low-res image's noise).

    .venv/bin/python tools/make_upscaler_fixture.py
"""
from pathlib import Path

import numpy as np
import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline,
                       UNet2DConditionModel)
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPTextModel

from fixture_common import clip_tokenizer, perturb

root = Path("tests/fixtures/pipeline")
out = root / "upscaler-tiny"
torch.manual_seed(9)
te = CLIPTextModel.from_pretrained(root / "sd2-tiny" / "text_encoder")
vae = AutoencoderKL.from_pretrained(root / "sd1-tiny" / "vae")
vae = AutoencoderKL.from_config({**vae.config, "scaling_factor": 0.08333}).eval()
vae.load_state_dict(AutoencoderKL.from_pretrained(root / "sd1-tiny" / "vae").state_dict())
unet = UNet2DConditionModel(sample_size=16, in_channels=7, out_channels=4, layers_per_block=1, norm_num_groups=8,
                            block_out_channels=(16, 32, 32), cross_attention_dim=te.config.hidden_size,
                            attention_head_dim=4, use_linear_projection=True, num_class_embeds=351,
                            only_cross_attention=[True, True, False],
                            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
perturb(unet, half=True)
sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")
low = DDPMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02)
pipe = StableDiffusionUpscalePipeline(vae=vae, text_encoder=te, tokenizer=clip_tokenizer("!"), unet=unet,
                                      low_res_scheduler=low, scheduler=sched, max_noise_level=350)
pipe.save_pretrained(out, safe_serialization=True)
(out / "tokenizer/tokenizer.json").unlink()  # the engine's built-in vocabulary; pad "!" from the config
pipe.set_progress_bar_config(disable=True)
rng = np.random.default_rng(3)
img = Image.fromarray((rng.random((12, 20, 3)) * 255).astype(np.uint8))
img.save(root / "upscale-input.png")
kw = dict(prompt="a red sneaker", negative_prompt="blurry", image=img, num_inference_steps=4, guidance_scale=9.0,
          output_type="np")
golden = {}
with torch.no_grad():
    golden["image_f32"] = torch.from_numpy(pipe(**kw, noise_level=20, generator=torch.Generator().manual_seed(42)).images)
    golden["image_nl100"] = torch.from_numpy(pipe(**kw, noise_level=100,
                                                  generator=torch.Generator().manual_seed(42)).images)
    # Given latents (diffusers' `latents=`): the generator then draws only the image's noise,
    # which is the first draw of seed 42 (saved, for `upscale --noise`).
    golden["latents"] = torch.randn(1, 4, 12, 20, generator=torch.Generator().manual_seed(5))
    golden["noise"] = torch.randn(1, 3, 12, 20, generator=torch.Generator().manual_seed(42))
    golden["image_latents"] = torch.from_numpy(pipe(**kw, noise_level=20, latents=golden["latents"],
                                                    generator=torch.Generator().manual_seed(42)).images)
    pipe.to(torch.float16)
    golden["image_f16"] = torch.from_numpy(pipe(**kw, noise_level=20, generator=torch.Generator().manual_seed(42)).images)
save_file({k: v.contiguous().float() for k, v in golden.items()}, root / "upscale-golden.safetensors")
print({k: tuple(v.shape) for k, v in golden.items()})
