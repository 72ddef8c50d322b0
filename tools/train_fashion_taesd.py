#!/usr/bin/env python3
"""Trains a tiny autoencoder (diffusers AutoencoderTiny, the TAESD architecture) for the
built-in model, for the README's TAESD example: 3 levels (the built-in VAE's 4×), 32 channels,
its decoder distilled from the built-in VAE's decoder (on the latents of tinted Fashion-MNIST
garments and of the U-Net's samples-to-be: noisy latents are clamped like TAESD's) and its
encoder trained to give the VAE's latent means. CPU only, seeded, a few minutes.

    apt-get install dataset-fashion-mnist
    .venv/bin/python tools/train_fashion_taesd.py

Writes assets/fashion-taesd/ (config.json + diffusion_pytorch_model.safetensors, f16) and
prints the decoder's PSNR against the VAE's decode on held-out latents.
"""
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderTiny

sys.path.insert(0, str(Path(__file__).parent))
from train_fashion_model import allowed_colours, load, tint  # noqa: E402

OUT = Path("assets/fashion-taesd")
torch.manual_seed(0)
gen = torch.Generator().manual_seed(0)
vae = AutoencoderKL.from_pretrained("assets/fashion-model/vae").eval().requires_grad_(False)
scale = vae.config.scaling_factor
ae = AutoencoderTiny(encoder_block_out_channels=(32, 32, 32), decoder_block_out_channels=(32, 32, 32),
                     num_encoder_blocks=(1, 2, 2), num_decoder_blocks=(2, 2, 1))
opt = torch.optim.AdamW(ae.parameters(), 2e-3, weight_decay=0.0)
x, y = load("train")
xt, yt = load("t10k")
steps, batch = 800, 64
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)


def sample(xs, ys, b, g):
    col = allowed_colours(g, ys[b])
    img = tint(xs[b], col)
    with torch.no_grad():
        post = vae.encode(img).latent_dist
        z = (post.mean + post.std * torch.randn(post.mean.shape, generator=g)) * scale
        target = vae.decode(z / scale).sample.clamp(-1, 1)
    return img, post.mean * scale, z, target


t0 = time.time()
for step in range(steps):
    b = torch.randint(len(x), (batch,), generator=gen)
    img, mean, z, target = sample(x, y, b, gen)
    loss = F.mse_loss(ae.decode(z).sample, target) + F.mse_loss(ae.encode(img).latents, mean)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    if step % 200 == 0 or step == steps - 1:
        print(f"step {step}/{steps} loss {loss.item():.5f} ({time.time() - t0:.0f} s)", flush=True)

ae.eval()
with torch.no_grad():
    g = torch.Generator().manual_seed(1)
    b = torch.randint(len(xt), (256,), generator=g)
    _, _, z, target = sample(xt, yt, b, g)
    mse = F.mse_loss(((ae.decode(z).sample + 1) / 2).clamp(0, 1), (target + 1) / 2).item()
    print(f"held-out decoder PSNR vs the VAE's decode: {10 * torch.log10(torch.tensor(1 / mse)).item():.1f} dB")
ae.to(torch.float16).save_pretrained(OUT, safe_serialization=True)
print("wrote", OUT)
