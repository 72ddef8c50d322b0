#!/usr/bin/env python3
"""The reference implementation's side of `sd-wgpu bench`: diffusers (CPU torch, fp32) on the
same architecture, size, batch and step count, with random weights, timed the same way —
text encoding (prompt + empty negative prompt), each guided U-Net call with its scheduler
step, the VAE decode — so every README speed figure has the reference's next to it, measured
on the same machine. Prints one JSON object with the bench's keys.

    .venv/bin/python tools/bench_reference.py --arch sd15 --width 128 --height 128 --steps 2

Needs torch, diffusers and transformers (no download: the configs are SD 1.5's and SD 2.1's
own, written out here; the tokenizer is the engine's assets/clip-tokenizer.json).
"""
import argparse
import json
import time

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizerFast

ap = argparse.ArgumentParser()
ap.add_argument("--arch", choices=["sd15", "sd21"], default="sd15")
ap.add_argument("--width", type=int, default=None)
ap.add_argument("--height", type=int, default=None)
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--steps", type=int, default=4)
ap.add_argument("--guidance", type=float, default=7.5)
a = ap.parse_args()
sd2 = a.arch == "sd21"
size = 768 if sd2 else 512
w, h = a.width or size, a.height or size

torch.manual_seed(0)
t0 = time.time()
unet = UNet2DConditionModel(
    sample_size=96 if sd2 else 64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=1024 if sd2 else 768, attention_head_dim=(5, 10, 20, 20) if sd2 else 8,
    use_linear_projection=sd2, norm_num_groups=32).eval()
vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
                    scaling_factor=0.18215).eval()
text_encoder = CLIPTextModel(CLIPTextConfig(
    vocab_size=49408, hidden_size=1024 if sd2 else 768, intermediate_size=4096 if sd2 else 3072,
    num_hidden_layers=23 if sd2 else 12, num_attention_heads=16 if sd2 else 12,
    max_position_embeddings=77, hidden_act="gelu" if sd2 else "quick_gelu")).eval()
tok = CLIPTokenizerFast(tokenizer_file="assets/clip-tokenizer.json", bos_token="<|startoftext|>",
                        eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                        pad_token="!" if sd2 else "<|endoftext|>", model_max_length=77)
scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                          beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                          steps_offset=1, prediction_type="v_prediction" if sd2 else "epsilon")
load_s = time.time() - t0

guided = a.guidance > 1.0
with torch.no_grad():
    t0 = time.time()
    prompts = ([""] if guided else []) + ["a photograph of an astronaut riding a horse"]
    ids = tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    ctx = text_encoder(ids)[0].repeat_interleave(a.batch, dim=0)
    text_s = time.time() - t0

    scheduler.set_timesteps(a.steps)
    latents = torch.randn(a.batch, 4, h // 8, w // 8)
    t0 = time.time()
    for t in scheduler.timesteps:
        x = torch.cat([latents] * 2) if guided else latents
        eps = unet(scheduler.scale_model_input(x, t), t, encoder_hidden_states=ctx).sample
        if guided:
            u, c = eps.chunk(2)
            eps = u + a.guidance * (c - u)
        latents = scheduler.step(eps, t, latents).prev_sample
    denoise_s = time.time() - t0

    t0 = time.time()
    image = vae.decode(latents / vae.config.scaling_factor).sample
    vae_s = time.time() - t0

steps = len(scheduler.timesteps)
print(json.dumps({
    "reference": f"diffusers (CPU torch {torch.__version__}, fp32, {torch.get_num_threads()} threads)",
    "arch": a.arch, "width": w, "height": h, "batch": a.batch, "steps": steps,
    "load_s": load_s, "text_encoder_s": text_s, "denoise_s": denoise_s,
    "s_per_step": denoise_s / steps, "vae_decode_s": vae_s,
}))
