#!/usr/bin/env python3
"""A tiny SDXL refiner and reference runs of diffusers' base + refiner ensemble, for
kernels-tests/sdxl.rs:

    tests/fixtures/pipeline/sdxl-refiner-tiny/   model_index.json (requires_aesthetics_score,
                                                 no force_zeros_for_empty_prompt), scheduler/
                                                 (SDXL's Euler), unet/ (f16: cross-attention on
                                                 text_encoder_2 alone, 40 wide; five time ids of
                                                 8 with the 24-wide pooled output); the refiner's
                                                 text_encoder_2, tokenizer_2 and vae are
                                                 sdxl-tiny's (as SDXL's refiner ships the base's
                                                 OpenCLIP and VAE): the test links them in
    tests/fixtures/pipeline/sdxl-refiner-golden.safetensors
        - final_ensemble / image_ensemble: base(..., num_inference_steps=6, denoising_end=0.7,
          output_type="latent") from the SDXL fixture's latents, then refiner(...,
          denoising_start=0.7, image=those latents); prompt and negative prompt, guidance 5
        - image_refine_img: the refiner alone as image-to-image on img2img-input.png,
          strength 0.5, 4 steps, seed 42, aesthetic scores 7 and 2 (not the defaults)

    .venv/bin/python tools/make_sdxl_refiner_fixture.py   (after make_pipeline_fixture_sdxl.py)
"""
import json
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from PIL import Image
from safetensors.torch import load_file, save_file

from fixture_common import clip_tokenizer, perturb

root = Path("tests/fixtures/pipeline")
torch.manual_seed(41)
base = StableDiffusionXLPipeline.from_pretrained(root / "sdxl-tiny", tokenizer=clip_tokenizer(),
                                                 tokenizer_2=clip_tokenizer("!"), torch_dtype=torch.float32)
base.set_progress_bar_config(disable=True)
unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=8,
                            block_out_channels=(16, 32), cross_attention_dim=40, attention_head_dim=(2, 4),
                            use_linear_projection=True, transformer_layers_per_block=(1, 2),
                            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                            addition_embed_type="text_time", addition_time_embed_dim=8,
                            projection_class_embeddings_input_dim=24 + 5 * 8)
perturb(unet, half=True)
unet = unet.to(torch.float16)
refiner = StableDiffusionXLImg2ImgPipeline(vae=base.vae, text_encoder=None, text_encoder_2=base.text_encoder_2,
                                           tokenizer=None, tokenizer_2=base.tokenizer_2, unet=unet,
                                           scheduler=base.scheduler, requires_aesthetics_score=True,
                                           force_zeros_for_empty_prompt=False)
out_dir = root / "sdxl-refiner-tiny"
with tempfile.TemporaryDirectory() as d:
    refiner.save_pretrained(d, safe_serialization=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    for part in ("model_index.json", "scheduler", "unet"):
        src = Path(d) / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, out_dir / part)
refiner.unet = UNet2DConditionModel.from_pretrained(out_dir / "unet", torch_dtype=torch.float32).eval()
refiner.to(torch.float32)
refiner.set_progress_bar_config(disable=True)
print(json.loads((out_dir / "model_index.json").read_text()))

gold = load_file(root / "sdxl-tiny-golden.safetensors")
kw = dict(prompt="a red sneaker on a white table", negative_prompt="blurry", guidance_scale=5.0)
out = {}
with torch.no_grad():
    lat = base(**kw, num_inference_steps=6, denoising_end=0.7, height=32, width=32, latents=gold["latents"].clone(),
               output_type="latent").images
    print("base timesteps", [float(t) for t in base.scheduler.timesteps])
    out["final_ensemble"] = refiner(**kw, num_inference_steps=6, denoising_start=0.7, image=lat,
                                    output_type="latent").images
    out["image_ensemble"] = torch.from_numpy(refiner(**kw, num_inference_steps=6, denoising_start=0.7, image=lat,
                                                     output_type="np").images)
    image = Image.open(root / "img2img-input.png").convert("RGB")
    out["image_refine_img"] = torch.from_numpy(refiner(**kw, image=image, strength=0.5, num_inference_steps=4,
                                                       aesthetic_score=7.0, negative_aesthetic_score=2.0,
                                                       generator=torch.Generator("cpu").manual_seed(42),
                                                       output_type="np").images)
save_file({k: v.contiguous() for k, v in out.items()}, root / "sdxl-refiner-golden.safetensors")
print({k: tuple(v.shape) for k, v in out.items()})
