"""The reference implementation's own fp16-vs-fp32 difference on the tiny SD 1-like fixture
(tests/fixtures/pipeline/sd1-tiny): diffusers' StableDiffusionPipeline run twice on the CPU
with the fixture's prompt pair, initial latents, 4 DDIM steps and guidance 7.5 — once in
fp32, once with every model in fp16 (`torch_dtype=torch.float16`) — and compared like
kernels-tests/f16_activations.rs compares the engine's f16 run with diffusers' fp32 one:
the final latents' largest absolute difference and the image PSNR. Prints one JSON object.

    .venv/bin/python tools/measure_f16_reference.py
"""
import json
import math
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from fixture_common import clip_tokenizer

root = Path("tests/fixtures/pipeline")
golden = load_file(root / "sd1-tiny-golden.safetensors")
kw = dict(prompt="a red sneaker on a white table", negative_prompt="blurry", num_inference_steps=4,
          guidance_scale=7.5, height=32, width=32)
runs = {}
for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
    pipe = StableDiffusionPipeline.from_pretrained(root / "sd1-tiny", tokenizer=clip_tokenizer(), torch_dtype=dtype,
                                                   safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    with torch.no_grad():
        lat = pipe(**kw, latents=golden["latents"].to(dtype), output_type="latent").images.float()
        img = pipe(**kw, latents=golden["latents"].to(dtype), output_type="np").images
    runs[name] = (lat, torch.from_numpy(img).float())


def psnr(a, b):
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


(l32, i32), (l16, i16) = runs["fp32"], runs["fp16"]
print(json.dumps({
    "reference": f"diffusers (CPU torch {torch.__version__})",
    "fp32_vs_golden_latents_max_abs": float((l32 - golden["final_latents"]).abs().max()),
    "fp16_vs_fp32_latents_max_abs": float((l16 - l32).abs().max()),
    "fp16_vs_fp32_image_psnr_db": psnr(i16, i32),
}))
