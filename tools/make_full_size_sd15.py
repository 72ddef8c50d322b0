#!/usr/bin/env python3
"""Builds the full-size Stable Diffusion 1.5 architecture with random (perturbed) weights in
the diffusers folder layout, and a reference run, for the on-demand check
`SD_WGPU_FULL_SIZE_DIR=DIR cargo test --release --test kernels -- --ignored full_size`:

    DIR/model/            diffusers pipeline folder (~4.3 GB of f32 safetensors)
    DIR/golden.safetensors  latents [1, 4, 32, 32], final_latents and image [1, 256, 256, 3]
                          for 2 DDIM steps at 256², guidance 7.5, the prompt below.

Configs are SD 1.5's own (runwayml/stable-diffusion-v1-5: unet, vae, text_encoder,
scheduler). Run: .venv/bin/python tools/make_full_size_sd15.py DIR
Then `... DIR --vae768` adds DIR/vae768.safetensors (a 768² decode reference).
"""
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizerFast

out = Path(sys.argv[1])
if "--vae768" in sys.argv:
    # Only the 768² decode reference, from the VAE saved by an earlier run: latents
    # [1, 4, 96, 96] → image [1, 3, 768, 768], in DIR/vae768.safetensors.
    vae = AutoencoderKL.from_pretrained(out / "model/vae").eval()
    z = torch.randn(1, 4, 96, 96, generator=torch.Generator().manual_seed(768))
    t0 = time.time()
    with torch.no_grad():
        img = vae.decode(z).sample
    print(f"diffusers VAE decode 768² (CPU, fp32): {time.time() - t0:.1f} s")
    save_file({"latents": z, "image": img.contiguous()}, out / "vae768.safetensors")
    sys.exit(0)
torch.manual_seed(0)
t0 = time.time()
unet = UNet2DConditionModel(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32)
vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, scaling_factor=0.18215)
text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                            num_hidden_layers=12, num_attention_heads=12,
                                            max_position_embeddings=77, hidden_act="quick_gelu"))
for m in (unet, vae, text_encoder):
    m.eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
tok = CLIPTokenizerFast(tokenizer_file="assets/clip-tokenizer.json", bos_token="<|startoftext|>",
                        eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token="<|endoftext|>",
                        model_max_length=77)
pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=scheduler,
                               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
pipe.save_pretrained(out / "model", safe_serialization=True)
(out / "model/tokenizer/tokenizer.json").unlink(missing_ok=True)  # the engine's built-in vocabulary
print(f"built and saved in {time.time() - t0:.0f} s")
latents = torch.randn(1, 4, 32, 32)
kw = dict(prompt="a photograph of an astronaut riding a horse", negative_prompt="", num_inference_steps=2,
          guidance_scale=7.5, height=256, width=256)
t0 = time.time()
with torch.no_grad():
    final = pipe(**kw, latents=latents.clone(), output_type="latent").images
    image = pipe(**kw, latents=latents.clone(), output_type="np").images
print(f"diffusers (CPU, fp32): 2 runs in {time.time() - t0:.1f} s")
save_file({"latents": latents, "final_latents": final.contiguous(), "image": torch.from_numpy(image).contiguous()},
          out / "golden.safetensors")

# A 512² decode with the full-size VAE (its 256-channel activations at 512² exceed lavapipe's
# 128 MiB binding, exercising the banded ops): latents [1, 4, 64, 64] → image [1, 3, 512, 512].
z = torch.randn(1, 4, 64, 64)
t0 = time.time()
with torch.no_grad():
    img512 = pipe.vae.decode(z).sample
print(f"diffusers VAE decode 512² (CPU, fp32): {time.time() - t0:.1f} s")
save_file({"latents": z, "image": img512.contiguous()}, out / "vae512.safetensors")
