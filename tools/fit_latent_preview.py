#!/usr/bin/env python3
"""Fits the built-in model's latent → RGB preview map (the engine's step previews): a linear
map with bias from the scaled latents (what the sampler holds) to the image averaged over each
latent's f×f pixels, by least squares over 2000 tinted Fashion-MNIST test images encoded with
the model's VAE. Writes assets/fashion-model/latent_rgb.json {"factors": [4][3], "bias": [3]}
in [0, 1] output units (SD's own map is factors/2 and bias 0.5).

    .venv/bin/python tools/fit_latent_preview.py
"""
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

sys.path.insert(0, str(Path(__file__).parent))
import train_fashion_model as T  # noqa: E402

torch.manual_seed(0)
vae = AutoencoderKL.from_pretrained(T.OUT / "vae", torch_dtype=torch.float32).eval()
x, y = T.load("t10k")
gen = torch.Generator().manual_seed(0)
b = torch.randint(len(x), (2000,), generator=gen)
img = T.tint(x[b], torch.randint(len(T.CNAMES), (2000,), generator=gen))  # [-1, 1]
with torch.no_grad():
    z = vae.encode(img).latent_dist.mean * vae.config.scaling_factor  # [n, 4, 8, 8]
f = img.shape[-1] // z.shape[-1]
target = F.avg_pool2d((img + 1) / 2, f)  # [n, 3, 8, 8] in [0, 1]
A = torch.cat([z.permute(0, 2, 3, 1).reshape(-1, 4), torch.ones(z.numel() // 4, 1)], 1)
B = target.permute(0, 2, 3, 1).reshape(-1, 3)
sol = torch.linalg.lstsq(A, B).solution  # [5, 3]
err = (A @ sol - B).abs().mean().item()
out = {"factors": sol[:4].tolist(), "bias": sol[4].tolist(), "mean_abs_error": err}
(T.OUT / "latent_rgb.json").write_text(json.dumps(out, indent=1))
print(out)
