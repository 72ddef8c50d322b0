#!/usr/bin/env python3
"""Trains a 4× upscaler for the built-in model's garments, for the README's `sd-wgpu upscale`
example: a diffusers StableDiffusionUpscalePipeline whose VAE and text encoder are the built-in
model's (both frozen; its VAE is 4× as the upscaler's is, re-parameterised for the upscaler's
fixed latent scale, see upscaler_vae; the text encoder is a link to assets/fashion-model/),
with a new 7-channel U-Net (the noisy latents + the noised 8×8 low-res image, the noise level
as its class label out of 351) trained on tinted Fashion-MNIST garments (32×32) and their
4×4 box-filtered 8×8 versions, v-prediction like the SD 2 upscaler, captions dropped 10% of
the time for classifier-free guidance. CPU only, seeded.

    apt-get install dataset-fashion-mnist
    .venv/bin/python tools/train_fashion_upscaler.py [--steps 3000]

Writes assets/fashion-upscaler/ (unet and vae f16, schedulers, model_index.json; text_encoder/
linked) and prints, on held-out garments, the PSNR of diffusers' upscale (20 DDIM steps,
guidance 4, noise level 20) and of a bicubic upsample against the 32×32 originals; writes
tests/fixtures/fashion/upscaler-golden.safetensors (`--golden-only` re-makes just that).
"""
import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline,
                       UNet2DConditionModel)
from safetensors.torch import save_file
from transformers import CLIPTextModel

sys.path.insert(0, str(Path(__file__).parent))
from fixture_common import clip_tokenizer  # noqa: E402
from train_fashion_model import CLASSES, CNAMES, allowed_colours, caption, load, lr_at, tint  # noqa: E402

BASE = Path("assets/fashion-model")
OUT = Path("assets/fashion-upscaler")
GOLDEN = Path("tests/fixtures/fashion/upscaler-golden.safetensors")
MAX_NOISE_LEVEL = 350
UPSCALER_SCALE = 0.08333


def low_res(hr):
    """32×32 → 8×8 by 4×4 box filter (PIL's Image.BOX on the engine's 32×32 PNGs)."""
    return F.avg_pool2d(hr, 4)


def upscaler_vae(vae):
    """The built-in VAE re-parameterised for the upscaler, whose pipeline always scales latents
    by 0.08333 (diffusers sets any upscaler VAE's scaling_factor to that): the posterior's mean
    × k and its variance × k² (quant_conv), the decoder's input ÷ k (post_quant_conv), so the
    same images have latents k× larger and latents × 0.08333 keep the built-in model's unit
    variance. Exact up to rounding."""
    k = vae.config.scaling_factor / UPSCALER_SCALE
    c = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[:c] *= k
        vae.quant_conv.bias[:c] *= k
        vae.quant_conv.bias[c:] += 2 * math.log(k)
        vae.post_quant_conv.weight /= k
    vae.register_to_config(scaling_factor=UPSCALER_SCALE)
    return vae.eval().requires_grad_(False)


def schedulers():
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")
    low = DDPMScheduler(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear")
    return sched, low


def train(unet, vae, te, x, y, gen, steps, batch=64, lr=1e-3):
    tok = clip_tokenizer()
    captions = [caption(c, k) for c in range(len(CNAMES)) for k in range(len(CLASSES))] + [""]
    ids = tok(captions, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        ctx_all = te(ids)[0]
    train_sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                beta_schedule="scaled_linear", prediction_type="v_prediction")
    _, low = schedulers()
    scale = vae.config.scaling_factor
    opt = torch.optim.AdamW(unet.parameters(), lr, weight_decay=1e-2)
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr)
        b = torch.randint(len(x), (batch,), generator=gen)
        col = allowed_colours(gen, y[b])
        hr = tint(x[b], col)
        with torch.no_grad():
            post = vae.encode(hr).latent_dist
            z0 = (post.mean + post.std * torch.randn(post.mean.shape, generator=gen)) * scale
        # Noise levels biased low (the pipeline's default is 20) but covering 0..350.
        level = (torch.rand(batch, generator=gen) ** 2 * (MAX_NOISE_LEVEL + 1)).long().clamp(max=MAX_NOISE_LEVEL)
        lr_img = low.add_noise(low_res(hr), torch.randn(batch, 3, 8, 8, generator=gen), level)
        cap = col * len(CLASSES) + y[b]
        cap[torch.rand(batch, generator=gen) < 0.1] = len(captions) - 1
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        zt = train_sched.add_noise(z0, noise, t)
        pred = unet(torch.cat([zt, lr_img], 1), t, ctx_all[cap], class_labels=level).sample
        loss = F.mse_loss(pred, train_sched.get_velocity(z0, noise, t))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        d = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in unet.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(d).add_(v.detach(), alpha=1 - d)
        if step % 200 == 0 or step == steps - 1:
            print(f"step {step}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    unet.load_state_dict(ema)


def psnr(a, b):
    return (10 * torch.log10(1 / F.mse_loss(a, b))).item()


def evaluate(pipe, xt, yt, n=64):
    g = torch.Generator().manual_seed(1)
    b = torch.randint(len(xt), (n,), generator=g)
    col = allowed_colours(g, yt[b])
    hr = tint(xt[b], col)
    lo = low_res(hr)
    with torch.no_grad():
        up = pipe([caption(c, k) for c, k in zip(col.tolist(), yt[b].tolist())], image=(lo + 1) / 2,
                  num_inference_steps=20, guidance_scale=4.0, noise_level=20, generator=torch.Generator().manual_seed(0),
                  output_type="pt").images
    truth = (hr + 1) / 2
    cubic = F.interpolate((lo + 1) / 2, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    print(f"held-out PSNR vs the 32×32 originals ({n} garments): upscaler {psnr(up, truth):.2f} dB, "
          f"bicubic {psnr(cubic, truth):.2f} dB, nearest {psnr(F.interpolate((lo + 1) / 2, scale_factor=4), truth):.2f} dB")


def golden(pipe, xt, yt):
    """The engine's check on this trained model (kernels-tests/upscale.rs): a held-out red
    sneaker (8-bit), its 8×8 box reduction, and diffusers' upscale of it."""
    k = CLASSES.index("sneaker")
    i = int((yt == k).nonzero()[0])
    hr = ((tint(xt[i:i + 1], torch.tensor([CNAMES.index("red")])) + 1) / 2 * 255).round()  # [1, 3, 32, 32]
    lo = (F.avg_pool2d(hr, 4) * 16 + 8).div(16).floor()  # Pillow's reduce(4): rounded block means
    low = lo[0].permute(1, 2, 0) / 255
    with torch.no_grad():
        img = pipe("a red sneaker", image=low.permute(2, 0, 1)[None], num_inference_steps=20, guidance_scale=4.0,
                   noise_level=20, generator=torch.Generator().manual_seed(1), output_type="np").images
    save_file({"original": (hr[0].permute(1, 2, 0) / 255).contiguous(), "low": low.contiguous(),
               "image": torch.from_numpy(img).contiguous()}, GOLDEN)
    print("wrote", GOLDEN)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--golden-only", action="store_true", help="only re-make the engine's golden run")
    a = ap.parse_args()
    xt, yt = load("t10k")
    if a.golden_only:
        pipe = StableDiffusionUpscalePipeline.from_pretrained(OUT, tokenizer=clip_tokenizer(),
                                                              torch_dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        golden(pipe, xt, yt)
        return
    torch.manual_seed(0)
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    vae = upscaler_vae(AutoencoderKL.from_pretrained(BASE / "vae", torch_dtype=torch.float32))
    te = CLIPTextModel.from_pretrained(BASE / "text_encoder", torch_dtype=torch.float32).eval().requires_grad_(False)
    unet = UNet2DConditionModel(sample_size=8, in_channels=7, out_channels=4, layers_per_block=1, norm_num_groups=16,
                                block_out_channels=(48, 96), cross_attention_dim=te.config.hidden_size,
                                attention_head_dim=4, num_class_embeds=MAX_NOISE_LEVEL + 1,
                                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    x, y = load("train")
    train(unet, vae, te, x, y, gen, a.steps)
    unet.eval()
    sched, low = schedulers()
    pipe = StableDiffusionUpscalePipeline(vae=vae, text_encoder=te, tokenizer=clip_tokenizer(), unet=unet,
                                          low_res_scheduler=low, scheduler=sched, max_noise_level=MAX_NOISE_LEVEL)
    if OUT.exists():
        shutil.rmtree(OUT)
    pipe.to(torch.float16).save_pretrained(OUT, safe_serialization=True)
    (OUT / "tokenizer/tokenizer.json").unlink(missing_ok=True)  # the engine's built-in vocabulary
    shutil.rmtree(OUT / "text_encoder")  # the built-in model's own, not a copy
    os.symlink(Path("..") / BASE.name / "text_encoder", OUT / "text_encoder")
    pipe = StableDiffusionUpscalePipeline.from_pretrained(OUT, tokenizer=clip_tokenizer(), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    evaluate(pipe, xt, yt)
    print("wrote", OUT)
    golden(pipe, xt, yt)


if __name__ == "__main__":
    main()
