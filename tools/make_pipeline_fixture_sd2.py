#!/usr/bin/env python3
"""A tiny random-weight SD 2.x-style pipeline (diffusers layout) and reference runs, for
kernels-tests/pipeline.rs: GELU text encoder with "!" padding, U-Net with linear
projections and per-block heads, DDIM with v-prediction and trailing spacing.

    tests/fixtures/pipeline/sd2-tiny/, tests/fixtures/pipeline/sd2-tiny-golden.safetensors
      latents [1, 4, 8, 8]; image_cfg (4 steps, guidance 7.5, negative prompt) and
      image_noguide (3 steps, guidance 1.0: the unconditional pass is skipped), [1, 32, 32, 3].

    .venv/bin/python tools/make_pipeline_fixture_sd2.py
"""
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from fixture_common import clip_tokenizer

torch.manual_seed(1)
text_encoder = CLIPTextModel(CLIPTextConfig(
    vocab_size=49408, hidden_size=16, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
    max_position_embeddings=77, hidden_act="gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=0))
unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=8,
                            block_out_channels=(32, 64), cross_attention_dim=16, attention_head_dim=(2, 4),
                            use_linear_projection=True,
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
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
                          timestep_spacing="trailing")
tok = clip_tokenizer("!")
pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=scheduler,
                               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
out = Path("tests/fixtures/pipeline/sd2-tiny")
pipe.save_pretrained(out, safe_serialization=True)
(out / "tokenizer/tokenizer.json").unlink()  # the engine's built-in vocabulary; pad "!" from the config
pipe = StableDiffusionPipeline.from_pretrained(out, tokenizer=tok, safety_checker=None, feature_extractor=None,
                                               requires_safety_checker=False)
latents = torch.randn(1, 4, 8, 8)
base = dict(prompt="a blue dress!! on a mannequin", height=32, width=32, output_type="np")
with torch.no_grad():
    cfg = pipe(**base, negative_prompt="low quality", num_inference_steps=4, guidance_scale=7.5, latents=latents.clone()).images
    noguide = pipe(**base, num_inference_steps=3, guidance_scale=1.0, latents=latents.clone()).images
save_file({"latents": latents, "image_cfg": torch.from_numpy(cfg).contiguous(),
           "image_noguide": torch.from_numpy(noguide).contiguous()}, "tests/fixtures/pipeline/sd2-tiny-golden.safetensors")
print("ok", cfg.shape)
