#!/usr/bin/env python3
"""Builds a tiny random-weight StableDiffusionPipeline in the diffusers folder layout and
dumps an end-to-end run, for kernels-tests/pipeline.rs:

    tests/fixtures/pipeline/sd1-tiny/          model_index.json, text_encoder/, tokenizer/,
                                               unet/, vae/, scheduler/ (DDIM, SD 1.5 config)
    tests/fixtures/pipeline/sd1-tiny-golden.safetensors
        latents [1, 4, 8, 8] (the `latents=` argument), final_latents (before VAE scaling),
        image [1, 32, 32, 3] in [0, 1] (output_type="np"), for the prompt and negative prompt
        below, 4 DDIM steps, guidance 7.5.

The text encoder keeps the real CLIP vocabulary (49408 tokens, 32 wide) so prompts go
through the real tokenizer. Every weight is perturbed (default init hides dropped biases).

    .venv/bin/python tools/make_pipeline_fixture.py
"""
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from fixture_common import clip_tokenizer

torch.manual_seed(0)
PROMPT = "a red sneaker on a white table"
NEGATIVE = "blurry"

text_encoder = CLIPTextModel(CLIPTextConfig(
    vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=8,
                            block_out_channels=(32, 64), cross_attention_dim=32, attention_head_dim=4,
                            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
                    block_out_channels=(32, 48, 64), down_block_types=("DownEncoderBlock2D",) * 3,
                    up_block_types=("UpDecoderBlock2D",) * 3, scaling_factor=0.18215)
for m in (text_encoder, unet, vae):
    m.eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
tokenizer = clip_tokenizer()
pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
out = Path("tests/fixtures/pipeline/sd1-tiny")
pipe.save_pretrained(out, safe_serialization=True)
(out / "tokenizer/tokenizer.json").unlink()  # the engine's built-in vocabulary; padding from the config

latents = torch.randn(1, 4, 8, 8)
kw = dict(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=7.5, height=32, width=32)
with torch.no_grad():
    final = pipe(**kw, latents=latents.clone(), output_type="latent").images
    image = pipe(**kw, latents=latents.clone(), output_type="np").images
# A seeded run with an ancestral sampler: initial latents and every step's noise come from
# the generator.
# Computed on the pipeline as a user loads it from the saved folder (the in-memory pipeline
# above gave a different seeded Euler-a image, which we could not explain; the reloaded one
# is what `from_pretrained` users get).
from diffusers import EulerAncestralDiscreteScheduler
pipe = StableDiffusionPipeline.from_pretrained(out, tokenizer=tokenizer, safety_checker=None, feature_extractor=None,
                                               requires_safety_checker=False)
pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
kw2 = dict(prompt=PROMPT, negative_prompt="", num_inference_steps=3, guidance_scale=5.0, height=32, width=32)
with torch.no_grad():
    seeded = pipe(**kw2, generator=torch.Generator("cpu").manual_seed(42), output_type="np").images
save_file({"latents": latents, "final_latents": final.contiguous(), "image": torch.from_numpy(image).contiguous(),
           "image_seed42_euler_a": torch.from_numpy(seeded).contiguous()},
          "tests/fixtures/pipeline/sd1-tiny-golden.safetensors")
print("final latents", tuple(final.shape), "image", image.shape, float(image.min()), float(image.max()))
