#!/usr/bin/env python3
"""Trains sd-wgpu's built-in model: a small latent diffusion model for coloured Fashion-MNIST
garments ("a red sneaker", "a blue dress"), in the diffusers layout, with the latent diffusion
recipe: first the autoencoder (KL-regularised, f = 4, 4 latent channels), then the U-Net on
its latents with the CLIP text encoder optimised jointly, captions dropped 10% of the time for
classifier-free guidance. CPU only, seeded, about 37 minutes on 2 cores.

Data: Debian's `dataset-fashion-mnist` (60k 28×28 training images, MIT): padded to 32×32 and
tinted with one of the COLOURS below. HELD_OUT colour × class pairs never appear in training.

    apt-get install dataset-fashion-mnist
    .venv/bin/python tools/train_fashion_model.py            # train, evaluate, export
    .venv/bin/python tools/train_fashion_model.py --eval-only  # re-evaluate assets/fashion-model

Writes
    assets/fashion-model/         diffusers folder, f16 safetensors (the engine's default model)
    tests/fixtures/fashion/classifier.safetensors   the evaluation classifier (small CNN)
    tests/fixtures/fashion/eval.json                accuracies (class, colour; seen / held out)
    tests/fixtures/fashion/golden.safetensors       a diffusers run for the engine parity test
"""
import argparse
import gzip
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

from fixture_common import clip_tokenizer

DATA = Path("/usr/share/datasets/fashion-mnist")
OUT = Path("assets/fashion-model")
FIX = Path("tests/fixtures/fashion")
CLASSES = ["t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
# Name → RGB tint (each with a channel at 1, so max(R, G, B) is the garment's brightness).
COLOURS = {"red": (1.0, 0.1, 0.1), "green": (0.1, 1.0, 0.1), "blue": (0.1, 0.3, 1.0),
           "yellow": (1.0, 0.9, 0.1), "purple": (0.7, 0.1, 1.0), "white": (1.0, 1.0, 1.0)}
HELD_OUT = [("red", "dress"), ("green", "sneaker"), ("blue", "bag"), ("yellow", "trousers"),
            ("purple", "sandal"), ("white", "coat")]
CNAMES = list(COLOURS)
RGB = torch.tensor([COLOURS[c] for c in CNAMES])


def idx(name):
    with gzip.open(DATA / name) as f:
        data = f.read()
    if "images" in name:
        return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 28, 28)
    return np.frombuffer(data, np.uint8, offset=8)


def load(split):
    x = torch.from_numpy(idx(f"{split}-images-idx3-ubyte.gz").copy()).float() / 255.0
    y = torch.from_numpy(idx(f"{split}-labels-idx1-ubyte.gz").copy()).long()
    return F.pad(x, (2, 2, 2, 2))[:, None], y  # [n, 1, 32, 32] in [0, 1]


def allowed_colours(gen, labels):
    """A colour per image, never a held-out pair."""
    held = torch.zeros(10, len(CNAMES), dtype=torch.bool)
    for c, k in HELD_OUT:
        held[CLASSES.index(k), CNAMES.index(c)] = True
    col = torch.randint(len(CNAMES), (len(labels),), generator=gen)
    bad = held[labels, col]
    while bad.any():
        col[bad] = torch.randint(len(CNAMES), (int(bad.sum()),), generator=gen)
        bad = held[labels, col]
    return col


def tint(x, col):
    """[n, 1, 32, 32] in [0, 1] × colour → RGB in [-1, 1]."""
    return (x * RGB[col][:, :, None, None]) * 2 - 1


def caption(col, k):
    return f"a {CNAMES[col]} {CLASSES[k]}"


# ---------------------------------------------------------------- evaluation measures
class Classifier(nn.Module):
    """Fashion-MNIST classifier on the brightness (max over RGB) of a 32×32 image."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(64 * 4 * 4, 128), nn.Linear(128, 10)

    def forward(self, rgb01):  # [n, 3, 32, 32] in [0, 1]
        x = rgb01.amax(1, keepdim=True)
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        x = F.max_pool2d(F.relu(self.c3(x)), 2)
        return self.fc2(F.dropout(F.relu(self.fc1(x.flatten(1))), 0.3, self.training))


def colour_of(rgb01):
    """The named colour nearest to the garment's mean chromaticity: pixels brighter than 0.3
    (max over RGB), their mean RGB divided by its max, nearest tint. Same rule as the engine's
    test (kernels-tests/default_model.rs)."""
    b = rgb01.amax(1)  # [n, h, w]
    mask = (b > 0.3).float()[:, None]
    mean = (rgb01 * mask).sum((2, 3)) / mask.sum((2, 3)).clamp(min=1)
    mean = mean / mean.amax(1, keepdim=True).clamp(min=1e-6)
    return torch.cdist(mean, RGB).argmin(1)


def train_classifier(x, y, xt, yt, gen, epochs):
    clf = Classifier()
    opt = torch.optim.Adam(clf.parameters(), 1e-3)
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 128):
            b = perm[i:i + 128]
            col = torch.randint(len(CNAMES), (len(b),), generator=gen)
            loss = F.cross_entropy(clf((tint(x[b], col) + 1) / 2), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    clf.eval()
    with torch.no_grad():
        acc = (clf(x_to01(xt)).argmax(1) == yt).float().mean().item()
    print(f"classifier test accuracy {acc:.3f}")
    return clf, acc


def x_to01(x):
    return x.repeat(1, 3, 1, 1)


# ---------------------------------------------------------------- the model
def make_models():
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=16,
                        block_out_channels=(16, 32, 64), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, sample_size=32)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
                                      bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=16,
                                block_out_channels=(48, 96), cross_attention_dim=64, attention_head_dim=4,
                                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    return vae, te, unet


def tokenizer():
    return clip_tokenizer()


def lr_at(step, total, base, warm=200):
    return base * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))


def train_vae(vae, x, y, gen, steps, batch=64):
    opt = torch.optim.AdamW(vae.parameters(), 1e-3, weight_decay=0.0)
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, 1e-3)
        b = torch.randint(len(x), (batch,), generator=gen)
        img = tint(x[b], allowed_colours(gen, y[b]))
        post = vae.encode(img).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, img) + 0.5 * (rec - img).abs().mean() + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 200 == 0 or step == steps - 1:
            print(f"vae step {step}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)


def encode_dataset(vae, x, y, gen, copies=2):
    """Posterior mean and std of every training image in `copies` random (allowed) colours."""
    means, stds, cols, idxs = [], [], [], []
    with torch.no_grad():
        for _ in range(copies):
            col = allowed_colours(gen, y)
            for i in range(0, len(x), 500):
                post = vae.encode(tint(x[i:i + 500], col[i:i + 500])).latent_dist
                means.append(post.mean)
                stds.append(post.std)
            cols.append(col)
            idxs.append(torch.arange(len(x)))
    return torch.cat(means), torch.cat(stds), torch.cat(cols), torch.cat(idxs)


def train_unet(vae, te, unet, x, y, gen, steps, batch=64, lr=1e-3):
    tok = tokenizer()
    captions = [caption(c, k) for c in range(len(CNAMES)) for k in range(10)] + [""]
    ids = tok(captions, padding="max_length", max_length=77, return_tensors="pt").input_ids
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr, weight_decay=1e-2)
    ema_u = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    ema_t = {k: v.detach().clone() for k, v in te.state_dict().items()}
    scale = vae.config.scaling_factor
    t0 = time.time()
    mean, std, cols, idxs = encode_dataset(vae, x, y, gen)
    print(f"encoded {len(mean)} latents in {time.time() - t0:.0f} s", flush=True)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr)
        b = torch.randint(len(mean), (batch,), generator=gen)
        col, label = cols[b], y[idxs[b]]
        z0 = (mean[b] + std[b] * torch.randn(mean[b].shape, generator=gen)) * scale
        cap = col * 10 + label
        cap[torch.rand(batch, generator=gen) < 0.1] = len(captions) - 1  # dropped: ""
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        zt = sched.add_noise(z0, noise, t)
        ctx = te(ids[cap])[0]
        pred = unet(zt, t, ctx).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        d = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, m in ((ema_u, unet), (ema_t, te)):
                for k, v in m.state_dict().items():
                    if v.dtype.is_floating_point:
                        ema[k].mul_(d).add_(v.detach(), alpha=1 - d)
        if step % 200 == 0 or step == steps - 1:
            print(f"unet step {step}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    unet.load_state_dict(ema_u)
    te.load_state_dict(ema_t)


def pipeline(vae, te, unet):
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tokenizer(), unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def evaluate(pipe, clf, per_pair, steps, guidance, seed=1234):
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for ci, c in enumerate(CNAMES):
        for k, cls in enumerate(CLASSES):
            prompts = [caption(ci, k)] * per_pair
            with torch.no_grad():
                img = pipe(prompts, height=32, width=32, num_inference_steps=steps, guidance_scale=guidance,
                           generator=gen, output_type="pt").images  # [n, 3, 32, 32] in [0, 1]
                pc = clf(img).argmax(1)
            pcol = colour_of(img)
            rows.append(dict(colour=c, cls=cls, held_out=(c, cls) in HELD_OUT,
                             class_acc=(pc == k).float().mean().item(), colour_acc=(pcol == ci).float().mean().item()))
    res = {}
    for name, sel in [("seen", [r for r in rows if not r["held_out"]]), ("held_out", [r for r in rows if r["held_out"]])]:
        res[name] = {"class_accuracy": float(np.mean([r["class_acc"] for r in sel])),
                     "colour_accuracy": float(np.mean([r["colour_acc"] for r in sel])), "pairs": len(sel)}
    res["per_pair"] = rows
    res["settings"] = dict(images_per_pair=per_pair, steps=steps, guidance=guidance, sampler="DDIM", seed=seed)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vae-steps", type=int, default=800)
    ap.add_argument("--unet-steps", type=int, default=4000)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--per-pair", type=int, default=10)
    ap.add_argument("--clf-epochs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="use only this many training images (smoke runs)")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    x, y = load("train")
    x, y = x[:a.limit], y[:a.limit]
    xt, yt = load("t10k")
    FIX.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    if a.eval_only:
        clf = Classifier()
        clf.load_state_dict(load_file(FIX / "classifier.safetensors"))
        clf.eval()
        pipe = StableDiffusionPipeline.from_pretrained(OUT, tokenizer=tokenizer(), safety_checker=None,
                                                       torch_dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
    else:
        clf, acc = train_classifier(x, y, xt, yt, gen, a.clf_epochs)
        save_file(clf.state_dict(), FIX / "classifier.safetensors")
        print(f"classifier: {time.time() - t_start:.0f} s", flush=True)
        vae, te, unet = make_models()
        train_vae(vae, x, y, gen, a.vae_steps)
        vae.eval()
        with torch.no_grad():  # LDM: scale latents to unit variance
            b = torch.randint(len(x), (2000,), generator=gen)
            z = vae.encode(tint(x[b], torch.randint(len(CNAMES), (2000,), generator=gen))).latent_dist.mean
        vae.register_to_config(scaling_factor=float(1.0 / z.std()))
        print(f"vae done at {time.time() - t_start:.0f} s; scaling_factor {vae.config.scaling_factor:.4f}", flush=True)
        train_unet(vae, te, unet, x, y, gen, a.unet_steps)
        print(f"unet done at {time.time() - t_start:.0f} s", flush=True)
        for m in (vae, te, unet):
            m.eval()
        pipe = pipeline(vae, te, unet)
        # Export f16 (the engine keeps f16 weights f16 on the GPU), then evaluate the exported
        # weights as diffusers loads them (f32 compute).
        pipe.to(torch.float16).save_pretrained(OUT, safe_serialization=True)
        (OUT / "tokenizer/tokenizer.json").unlink(missing_ok=True)  # the engine's built-in vocabulary
        (OUT / "vocabulary.json").write_text(json.dumps(
            {"colours": CNAMES, "rgb": [COLOURS[c] for c in CNAMES], "classes": CLASSES, "held_out": [f"a {c} {k}" for c, k in HELD_OUT],
             "size": 32}, indent=1))
        pipe = StableDiffusionPipeline.from_pretrained(OUT, tokenizer=tokenizer(), safety_checker=None,
                                                       torch_dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
    res = evaluate(pipe, clf, a.per_pair, steps=30, guidance=7.5)
    res["classifier_test_accuracy_on_real_images"] = acc if not a.eval_only else None
    (FIX / "eval.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "per_pair"}, indent=1))
    # Parity golden: fixed latents, 20 DDIM steps, guidance 7.5.
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        img = pipe(["a red sneaker", "a blue dress"], negative_prompt=["", ""], height=32, width=32,
                   num_inference_steps=20, guidance_scale=7.5, latents=latents.clone(), output_type="np").images
    save_file({"latents": latents, "image": torch.from_numpy(img).contiguous()}, FIX / "golden.safetensors")
    print(f"total {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
