#!/usr/bin/env python3
"""Trains a LoRA for the built-in model, for the README's LoRA example: "colour swap", which
paints each garment in another colour than the prompt names (red ↔ blue, green ↔ purple,
yellow ↔ white). Rank 8 on the U-Net's attention and feed-forward projections and the text
encoder's attention, PEFT-trained with the base model frozen, then written in kohya / A1111's
format (`lora_unet_*`, `lora_te_*`, `.alpha`) — the format people download.

Data: Debian's `dataset-fashion-mnist`, tinted as tools/train_fashion_model.py does, each
image captioned with its colour's swap partner. CPU only, seeded, a few minutes on 2 cores.

    apt-get install dataset-fashion-mnist
    .venv/bin/python tools/train_fashion_lora.py

Writes assets/lora/fashion-colour-swap.safetensors (f16) and prints how often diffusers'
pipeline with the LoRA at 1.0 draws the swapped colour (the README's claim).
"""
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline
from peft import LoraConfig, get_peft_model_state_dict
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
import transformers.integrations.peft as _tp  # noqa: E402

_tp.check_peft_version = lambda **_: None  # transformers 5.24 asks for PEFT 0.22 (not released)
from fixture_common import clip_tokenizer  # noqa: E402
from train_fashion_model import CLASSES, CNAMES, allowed_colours, colour_of, load, tint  # noqa: E402

SWAP = {"red": "blue", "blue": "red", "green": "purple", "purple": "green", "yellow": "white", "white": "yellow"}
OUT = Path("assets/lora/fashion-colour-swap.safetensors")
RANK, ALPHA = 8, 8.0

torch.manual_seed(0)
gen = torch.Generator().manual_seed(0)
pipe = StableDiffusionPipeline.from_pretrained("assets/fashion-model", tokenizer=clip_tokenizer(), safety_checker=None,
                                               feature_extractor=None, requires_safety_checker=False,
                                               torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
vae, te, unet = pipe.vae, pipe.text_encoder, pipe.unet
for m in (vae, te, unet):
    m.requires_grad_(False)
unet.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights="gaussian",
                            target_modules=["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]))
te.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights="gaussian",
                          target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]))
params = [p for m in (unet, te) for p in m.parameters() if p.requires_grad]
print("trainable", sum(p.numel() for p in params))

x, y = load("train")
tok = clip_tokenizer()
swap_idx = torch.tensor([CNAMES.index(SWAP[c]) for c in CNAMES])
captions = [f"a {CNAMES[c]} {CLASSES[k]}" for c in range(len(CNAMES)) for k in range(10)]
ids = tok(captions, padding="max_length", max_length=77, return_tensors="pt").input_ids
sched = DDPMScheduler.from_config(pipe.scheduler.config)
opt = torch.optim.AdamW(params, 1e-3, weight_decay=0.0)
scale = vae.config.scaling_factor
steps, batch = 1200, 64
t0 = time.time()
for step in range(steps):
    b = torch.randint(len(x), (batch,), generator=gen)
    col = allowed_colours(gen, y[b])
    with torch.no_grad():
        post = vae.encode(tint(x[b], col)).latent_dist
        z0 = (post.mean + post.std * torch.randn(post.mean.shape, generator=gen)) * scale
    cap = swap_idx[col] * 10 + y[b]  # the prompt names the partner colour
    noise = torch.randn(z0.shape, generator=gen)
    t = torch.randint(0, 1000, (batch,), generator=gen)
    pred = unet(sched.add_noise(z0, noise, t), t, te(ids[cap])[0]).sample
    loss = F.mse_loss(pred, noise)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 200 == 0 or step == steps - 1:
        print(f"step {step}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)


def kohya(prefix, sd):
    """PEFT keys (`…to_q.lora_A.weight`) → kohya's (`lora_unet_…_to_q.lora_down.weight`)."""
    out = {}
    for k, v in sd.items():
        mod, _, role = k.partition(".lora_")
        name = prefix + mod.removeprefix("text_model.").replace(".", "_")
        if prefix == "lora_te_":
            name = "lora_te_text_model_" + mod.removeprefix("text_model.").replace(".", "_")
        kind = {"A.weight": "lora_down.weight", "B.weight": "lora_up.weight"}[role]
        out[f"{name}.{kind}"] = v.detach().half().contiguous()
        out[f"{name}.alpha"] = torch.tensor(ALPHA).half()
    return out


OUT.parent.mkdir(parents=True, exist_ok=True)
save_file({**kohya("lora_unet_", get_peft_model_state_dict(unet)), **kohya("lora_te_", get_peft_model_state_dict(te))},
          OUT)
print("wrote", OUT, OUT.stat().st_size, "bytes")

# How often the swapped colour comes out (diffusers, the file just written, 20 DDIM steps).
check = StableDiffusionPipeline.from_pretrained("assets/fashion-model", tokenizer=clip_tokenizer(), safety_checker=None,
                                                feature_extractor=None, requires_safety_checker=False,
                                                torch_dtype=torch.float32)
check.set_progress_bar_config(disable=True)
check.load_lora_weights(str(OUT.parent), weight_name=OUT.name, adapter_name="swap")
g = torch.Generator().manual_seed(1)
hits = total = 0
for ci, c in enumerate(CNAMES):
    with torch.no_grad():
        img = check([f"a {c} {k}" for k in CLASSES], height=32, width=32, num_inference_steps=20, guidance_scale=7.5,
                    generator=g, output_type="pt").images
    hits += int((colour_of(img) == swap_idx[ci]).sum())
    total += len(CLASSES)
print(f"swapped colour drawn {hits}/{total}")
