#!/usr/bin/env python3
"""Builds a tiny random-weight StableDiffusionXLPipeline in the diffusers folder layout and
dumps end-to-end runs, for kernels-tests/sdxl.rs:

    tests/fixtures/pipeline/sdxl-tiny/          model_index.json, text_encoder/ (CLIP-L-like),
                                                text_encoder_2/ (with projection), tokenizer/,
                                                tokenizer_2/ (pads with "!"), unet/ (text_time,
                                                no first-level transformer, depth 2 at the
                                                second level), vae/ (scaling 0.13025),
                                                scheduler/ (Euler, SDXL's config); weights in f16
    tests/fixtures/pipeline/sdxl-tiny-golden.safetensors
        latents [1, 4, 8, 8] (the `latents=` argument); for each case below final_<case>
        (latents before VAE scaling) and image_<case> [1, 32, 32, 3] in [0, 1]:
        - neg: prompt and negative prompt, 3 Euler steps, guidance 5
        - noneg: no negative prompt (force_zeros_for_empty_prompt: zero unconditional
          context and pooled output), 3 steps, guidance 5
        - sizes: original_size (64, 48), crops (4, 8), target_size (32, 32) in the time ids
        - negsizes: the negative row's own time ids (negative_original_size (16, 24), crops
          (2, 6), negative_target_size (40, 36))
        - eulera, dpmk, ddim: the "neg" case with EulerAncestralDiscreteScheduler,
          DPMSolverMultistepScheduler with Karras sigmas and DDIMScheduler from the same config,
          initial latents and step noise from torch.Generator("cpu").manual_seed(42)
        - turbo1, turbo2: SDXL-Turbo's way: EulerAncestralDiscreteScheduler with trailing
          spacing, guidance 0 (no unconditional pass), 1 and 2 steps, seed 42

Every weight is perturbed, then rounded to f16 (the golden runs use exactly the stored
weights, in f32). The text encoders keep the real CLIP vocabulary so prompts go through the
real tokenizer.

    .venv/bin/python tools/make_pipeline_fixture_sdxl.py
"""
from pathlib import Path

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel)
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from fixture_common import clip_tokenizer, perturb

torch.manual_seed(5)
PROMPT = "a red sneaker on a white table"
NEGATIVE = "blurry"
common = dict(vocab_size=49408, intermediate_size=64, num_hidden_layers=2, max_position_embeddings=77,
              bos_token_id=49406)
text_encoder = CLIPTextModel(CLIPTextConfig(
    hidden_size=32, num_attention_heads=4, hidden_act="quick_gelu", eos_token_id=49407, pad_token_id=49407,
    **common))
text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(
    hidden_size=40, num_attention_heads=5, hidden_act="gelu", projection_dim=24, eos_token_id=2, pad_token_id=1,
    **common))
unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=8,
                            block_out_channels=(32, 64), cross_attention_dim=32 + 40, attention_head_dim=(2, 4),
                            use_linear_projection=True, transformer_layers_per_block=(1, 2),
                            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                            addition_embed_type="text_time", addition_time_embed_dim=8,
                            projection_class_embeddings_input_dim=24 + 6 * 8)
vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
                    block_out_channels=(32, 48, 64), down_block_types=("DownEncoderBlock2D",) * 3,
                    up_block_types=("UpDecoderBlock2D",) * 3, scaling_factor=0.13025, force_upcast=True)
perturb(text_encoder, text_encoder_2, unet, vae, half=True)
# stabilityai/stable-diffusion-xl-base-1.0's scheduler config.
scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                   beta_schedule="scaled_linear", interpolation_type="linear",
                                   prediction_type="epsilon", steps_offset=1, timestep_spacing="leading",
                                   use_karras_sigmas=False)
pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                 tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(pad="!"), unet=unet,
                                 scheduler=scheduler, force_zeros_for_empty_prompt=True)
latents = torch.randn(1, 4, 8, 8)
base = dict(prompt=PROMPT, num_inference_steps=3, guidance_scale=5.0, height=32, width=32)
cases = {
    "neg": dict(base, negative_prompt=NEGATIVE),
    "noneg": dict(base),
    "sizes": dict(base, negative_prompt=NEGATIVE, original_size=(64, 48), crops_coords_top_left=(4, 8),
                  target_size=(32, 32)),
    "negsizes": dict(base, negative_prompt=NEGATIVE, negative_original_size=(16, 24),
                     negative_crops_coords_top_left=(2, 6), negative_target_size=(40, 36)),
}
config = dict(pipe.scheduler.config)
seeded = {
    "eulera": (EulerAncestralDiscreteScheduler.from_config(config), dict(base, negative_prompt=NEGATIVE)),
    "dpmk": (DPMSolverMultistepScheduler.from_config(config, use_karras_sigmas=True),
             dict(base, negative_prompt=NEGATIVE)),
    "ddim": (DDIMScheduler.from_config(config), dict(base, negative_prompt=NEGATIVE)),
    # stabilityai/sdxl-turbo's scheduler: Euler ancestral, trailing.
    "turbo1": (EulerAncestralDiscreteScheduler.from_config(config, timestep_spacing="trailing"),
               dict(base, num_inference_steps=1, guidance_scale=0.0)),
    "turbo2": (EulerAncestralDiscreteScheduler.from_config(config, timestep_spacing="trailing"),
               dict(base, num_inference_steps=2, guidance_scale=0.0)),
}
golden = {"latents": latents}
with torch.no_grad():
    for name, kw in cases.items():
        final = pipe(**kw, latents=latents.clone(), output_type="latent").images
        image = pipe(**kw, latents=latents.clone(), output_type="np").images
        golden[f"final_{name}"] = final.contiguous()
        golden[f"image_{name}"] = torch.from_numpy(image).contiguous()
        print(name, "final latents", tuple(final.shape), "image", image.shape)
    for name, (sched, kw) in seeded.items():
        pipe.scheduler = sched
        final = pipe(**kw, generator=torch.Generator("cpu").manual_seed(42), output_type="latent").images
        image = pipe(**kw, generator=torch.Generator("cpu").manual_seed(42), output_type="np").images
        golden[f"final_{name}"] = final.contiguous()
        golden[f"image_{name}"] = torch.from_numpy(image).contiguous()
        print(name, [float(t) for t in sched.timesteps], "final latents", tuple(final.shape))
    pipe.scheduler = scheduler
out = Path("tests/fixtures/pipeline/sdxl-tiny")
pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)
for t in ("tokenizer", "tokenizer_2"):
    (out / t / "tokenizer.json").unlink()  # the engine's built-in vocabulary; padding from the config
save_file(golden, "tests/fixtures/pipeline/sdxl-tiny-golden.safetensors")
