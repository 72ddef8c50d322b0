#!/usr/bin/env python3
"""A separate VAE for the tiny SDXL pipeline (diffusers' `vae=` argument; `--vae` in the
engine), for kernels-tests/sdxl.rs:

    tests/fixtures/pipeline/vae-small/        a diffusers AutoencoderKL folder of another
                                              architecture (16/24/32 channels) with its own
                                              scaling_factor 0.2 and force_upcast false (like
                                              the fp16-fix SDXL VAE), f16
    tests/fixtures/pipeline/vae-ldm.safetensors  sdxl-tiny's VAE architecture with other
                                              (perturbed) weights, one file in the original
                                              layout (encoder.down.*, decoder.up.*, 1×1-conv
                                              attention), f16; read back with diffusers'
                                              AutoencoderKL.from_single_file it must equal them
    tests/fixtures/pipeline/vae-golden.safetensors
        image_folder, image_file [1, 32, 32, 3]: the SDXL fixture's "neg" case through
        StableDiffusionXLPipeline with each VAE

    .venv/bin/python tools/make_vae_swap_fixture.py   (after make_pipeline_fixture_sdxl.py)
"""
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionXLPipeline
from safetensors.torch import load_file, save_file

from fixture_common import clip_tokenizer, perturb
from make_single_file_fixtures import vae_to_ldm

root = Path("tests/fixtures/pipeline")
torch.manual_seed(21)
pipe = StableDiffusionXLPipeline.from_pretrained(root / "sdxl-tiny", tokenizer=clip_tokenizer(),
                                                 tokenizer_2=clip_tokenizer("!"), torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)

small = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
                      block_out_channels=(16, 24, 32), down_block_types=("DownEncoderBlock2D",) * 3,
                      up_block_types=("UpDecoderBlock2D",) * 3, scaling_factor=0.2, force_upcast=False)
perturb(small, half=True)
small.to(torch.float16).save_pretrained(root / "vae-small", safe_serialization=True)
small = AutoencoderKL.from_pretrained(root / "vae-small", torch_dtype=torch.float32).eval()

other = AutoencoderKL.from_config(pipe.vae.config)
perturb(other, half=True)
ldm = {k: v.half().contiguous() for k, v in vae_to_ldm(other.state_dict(), other.config).items()}
ldm = {k.removeprefix("first_stage_model."): v for k, v in ldm.items()}
save_file(ldm, root / "vae-ldm.safetensors")
with tempfile.TemporaryDirectory() as d:
    pipe.vae.save_pretrained(d)  # the config only matters
    back = AutoencoderKL.from_single_file(root / "vae-ldm.safetensors", config=d, torch_dtype=torch.float32)
for k, v in other.state_dict().items():
    assert torch.equal(back.state_dict()[k], v.half().float()), k
print("vae-ldm.safetensors round trip exact")
other = back.eval()

gold = load_file(root / "sdxl-tiny-golden.safetensors")
kw = dict(prompt="a red sneaker on a white table", negative_prompt="blurry", height=32, width=32,
          num_inference_steps=3, guidance_scale=5.0, output_type="np")
out = {}
with torch.no_grad():
    for name, vae in [("folder", small), ("file", other)]:
        p = StableDiffusionXLPipeline(vae=vae, text_encoder=pipe.text_encoder, text_encoder_2=pipe.text_encoder_2,
                                      tokenizer=pipe.tokenizer, tokenizer_2=pipe.tokenizer_2, unet=pipe.unet,
                                      scheduler=pipe.scheduler)
        p.set_progress_bar_config(disable=True)
        out[f"image_{name}"] = torch.from_numpy(p(**kw, latents=gold["latents"].clone()).images).contiguous()
save_file(out, root / "vae-golden.safetensors")
print({k: tuple(v.shape) for k, v in out.items()})
