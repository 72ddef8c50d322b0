#!/usr/bin/env python3
"""LoRA files in the formats people download, and diffusers' images with them, for
kernels-tests/lora.rs:

    tests/fixtures/pipeline/lora/sd1-kohya.safetensors
        kohya / A1111 keys for sd1-tiny: `lora_te_*` on every text-encoder linear, `lora_unet_*`
        on the attention linears, the 1×1-conv proj_in/proj_out, and LoCon 3×3 convs (resnet
        conv1/conv2), time_emb_proj and conv_shortcut; ranks 4 (linears) and 2 (convs),
        `.alpha` 2 (U-Net) and 3 (text encoder), f16
    tests/fixtures/pipeline/lora/sd1-peft.safetensors
        diffusers / PEFT keys (`unet.*.lora_A.weight`, `text_encoder.*.lora_B.weight`) as
        `save_lora_weights` writes them, with the adapter metadata (rank 4, lora_alpha 8, so
        scale 2; the text encoder's rank 2, lora_alpha 2), f32
    tests/fixtures/pipeline/lora/sdxl-kohya.safetensors
        kohya's SDXL keys for sdxl-tiny: the U-Net in the original (SGM) module names
        (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`, `..._middle_block_1_...`,
        `..._output_blocks_...`, resnets' `in_layers_2` / `emb_layers_1`), `lora_te1_*`,
        `lora_te2_*`, `.alpha` 3 (U-Net), 2 (te1), 1 (te2), f16
    tests/fixtures/pipeline/lora/golden.safetensors
        image_<case> [1, 32, 32, 3], final_<case> [1, 4, 8, 8] through diffusers'
        `load_lora_weights` + `set_adapters`:
        - kohya: sd1-tiny, the golden prompt pair, 4 DDIM steps, guidance 7.5, kohya at 0.8
        - kohya_file: as kohya on sd1-tiny.safetensors (`from_single_file`, f16 weights)
        - both: as kohya, kohya at 0.8 and peft at 0.5
        - sdxl: sdxl-tiny's "neg" case (3 Euler steps, guidance 5), the SDXL file at 0.7 (the
          folder's weights are f16 and sdxl-tiny.safetensors holds the same: one reference)

Every LoRA module is checked to have been loaded by diffusers (a key it silently dropped would
make the comparison meaningless).

    .venv/bin/python tools/make_lora_fixture.py   (needs `pip install peft`)
"""
import json
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import load_file, save_file

from fixture_common import clip_tokenizer
from make_single_file_fixtures import unet_to_ldm

# transformers 5.24 asks for PEFT >= 0.22, which the package index does not have yet; 0.21's
# LoRA layers are what its text-encoder integration uses all the same.
import transformers.integrations.peft as _tp  # noqa: E402

_tp.check_peft_version = lambda **_: None

ROOT = Path("tests/fixtures/pipeline")
OUT = ROOT / "lora"
OUT.mkdir(exist_ok=True)
gen = torch.Generator().manual_seed(5)


def randn(*shape, std=0.15):
    return torch.randn(*shape, generator=gen) * std


def lora_pair(mod, rank):
    """down / up for a Linear or Conv2d: LoCon keeps the conv's kernel on `down`."""
    if isinstance(mod, torch.nn.Conv2d):
        kh, kw = mod.kernel_size
        return randn(rank, mod.in_channels, kh, kw), randn(mod.out_channels, rank, 1, 1)
    return randn(rank, mod.in_features), randn(mod.out_features, rank)


def kohya(prefix, modules, alpha, names=None):
    """kohya keys for `modules` ({diffusers name: module}); `names` maps to the file's name.
    One `alpha` for every module: diffusers 0.42 drops the per-module alphas of attention
    projections (its alpha_pattern keys keep the old `processor.to_q_lora` names, PEFT warns
    "alpha_pattern keys did not match"), where kohya and A1111 scale each module by its own
    alpha / rank, as the engine does."""
    sd = {}
    for name, mod in sorted(modules.items()):
        rank = 2 if isinstance(mod, torch.nn.Conv2d) and mod.kernel_size != (1, 1) else 4
        down, up = lora_pair(mod, rank)
        key = prefix + (names(name) if names else name).replace(".", "_")
        sd[f"{key}.lora_down.weight"] = down.half()
        sd[f"{key}.lora_up.weight"] = up.half()
        sd[f"{key}.alpha"] = torch.tensor(alpha).half()
    return sd


def unet_targets(unet):
    keep = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out", "conv1",
            "conv2", "time_emb_proj", "conv_shortcut")
    return {n: m for n, m in unet.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and n.endswith(keep)
            and ("attentions" in n or "resnets" in n)}


def te_targets(te):
    return {n: m for n, m in te.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n}


def text_model(name):
    """kohya's text-encoder names: transformers 4's `text_model.encoder…` (transformers 5 drops
    the prefix from the module tree; diffusers maps both)."""
    return name if name.startswith("text_model.") else "text_model." + name


def loaded_modules(model, adapter):
    return {n for n, m in model.named_modules() if hasattr(m, "lora_A") and adapter in m.lora_A}


def check_loaded(model, adapter, expected):
    got = loaded_modules(model, adapter)
    assert got == set(expected), (adapter, sorted(set(expected) ^ got)[:8])


def run(pipe, latents, kw):
    with torch.no_grad():
        final = pipe(**kw, latents=latents.clone(), output_type="latent").images
        image = pipe(**kw, latents=latents.clone(), output_type="np").images
    return final.contiguous(), torch.from_numpy(image).contiguous()


golden = {}

# SD 1.x: kohya (with LoCon) and PEFT files.
sd1 = StableDiffusionPipeline.from_pretrained(ROOT / "sd1-tiny", tokenizer=clip_tokenizer(), safety_checker=None,
                                              feature_extractor=None, requires_safety_checker=False)
sd1.set_progress_bar_config(disable=True)
u_t, te_t = unet_targets(sd1.unet), te_targets(sd1.text_encoder)
sd = {**kohya("lora_unet_", u_t, 2.0), **kohya("lora_te_", te_t, 3.0, text_model)}
save_file(sd, OUT / "sd1-kohya.safetensors")

from peft import LoraConfig, get_peft_model_state_dict  # noqa: E402

unet_cfg = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                      target_modules=["to_q", "to_k", "to_v", "to_out.0", "ff.net.2"])
te_cfg = LoraConfig(r=2, lora_alpha=2, init_lora_weights=False, target_modules=["q_proj", "fc1"])
sd1.unet.add_adapter(unet_cfg, adapter_name="tmp")
sd1.text_encoder.add_adapter(te_cfg, adapter_name="tmp")
with torch.no_grad():
    for m in (sd1.unet, sd1.text_encoder):
        for n, p in m.named_parameters():
            if "lora_" in n:
                p.copy_(randn(*p.shape))
StableDiffusionPipeline.save_lora_weights(
    OUT, unet_lora_layers=get_peft_model_state_dict(sd1.unet, adapter_name="tmp"),
    text_encoder_lora_layers=get_peft_model_state_dict(sd1.text_encoder, adapter_name="tmp"),
    weight_name="sd1-peft.safetensors", unet_lora_adapter_metadata=unet_cfg.to_dict(),
    text_encoder_lora_adapter_metadata=te_cfg.to_dict())
sd1.unet.delete_adapters("tmp")
sd1.text_encoder.delete_adapter("tmp")
peft_keys = load_file(OUT / "sd1-peft.safetensors").keys()
print("peft keys", len(peft_keys), next(iter(sorted(peft_keys))))

base = load_file(ROOT / "sd1-tiny-golden.safetensors")
kw = dict(prompt="a red sneaker on a white table", negative_prompt="blurry", num_inference_steps=4,
          guidance_scale=7.5, height=32, width=32)
sd1.load_lora_weights(OUT, weight_name="sd1-kohya.safetensors", adapter_name="kohya")
check_loaded(sd1.unet, "kohya", u_t)
check_loaded(sd1.text_encoder, "kohya", te_t)
sd1.set_adapters(["kohya"], [0.8])
golden["final_kohya"], golden["image_kohya"] = run(sd1, base["latents"], kw)
before = {n: p.clone() for m in (sd1.unet, sd1.text_encoder) for n, p in m.named_parameters() if "kohya" in n}
sd1.load_lora_weights(OUT, weight_name="sd1-peft.safetensors", adapter_name="peft")
after = {n: p for m in (sd1.unet, sd1.text_encoder) for n, p in m.named_parameters() if "kohya" in n}
assert all(torch.equal(before[n], after[n]) for n in before), "loading a second LoRA changed the first"
assert len(loaded_modules(sd1.unet, "peft")) == len({k.split(".lora_")[0] for k in peft_keys if k.startswith("unet.")})
sd1.set_adapters(["kohya", "peft"], [0.8, 0.5])
golden["final_both"], golden["image_both"] = run(sd1, base["latents"], kw)
with torch.no_grad():
    sd1.disable_lora()
    plain = sd1(**kw, latents=base["latents"].clone(), output_type="np").images
assert abs(plain - base["image"].numpy()).max() < 1e-5, "disabled LoRA must give the base image"
print("sd1 LoRA changes the image by", float(abs(golden["image_kohya"].numpy() - plain).max()))

# The same kohya file on the single-file checkpoint (f16 weights, so its own reference).
one = StableDiffusionPipeline.from_single_file(ROOT / "sd1-tiny.safetensors", config=str(ROOT / "sd1-tiny"),
                                               tokenizer=clip_tokenizer(), safety_checker=None,
                                               torch_dtype=torch.float32, local_files_only=True)
one.set_progress_bar_config(disable=True)
one.load_lora_weights(OUT, weight_name="sd1-kohya.safetensors", adapter_name="kohya")
check_loaded(one.unet, "kohya", u_t)
one.set_adapters(["kohya"], [0.8])
golden["final_kohya_file"], golden["image_kohya_file"] = run(one, base["latents"], kw)

# SDXL: kohya's SGM names for the U-Net, te1 and te2.
xl = StableDiffusionXLPipeline.from_pretrained(ROOT / "sdxl-tiny", tokenizer=clip_tokenizer(),
                                               tokenizer_2=clip_tokenizer("!"), torch_dtype=torch.float32)
xl.set_progress_bar_config(disable=True)
cfg = dict(xl.unet.config)
xu = unet_targets(xl.unet)
sgm = {n: k.removeprefix("model.diffusion_model.").removesuffix(".weight")
       for n, k in zip(xu, unet_to_ldm({f"{n}.weight": None for n in xu}, cfg))}
t1, t2 = te_targets(xl.text_encoder), te_targets(xl.text_encoder_2)
sd = {**kohya("lora_unet_", xu, 3.0, lambda n: sgm[n]), **kohya("lora_te1_", t1, 2.0, text_model),
      **kohya("lora_te2_", t2, 1.0, text_model)}
save_file(sd, OUT / "sdxl-kohya.safetensors")
xl.load_lora_weights(OUT, weight_name="sdxl-kohya.safetensors", adapter_name="kohya")
check_loaded(xl.unet, "kohya", xu)
check_loaded(xl.text_encoder, "kohya", t1)
check_loaded(xl.text_encoder_2, "kohya", t2)
xl.set_adapters(["kohya"], [0.7])
xg = load_file(ROOT / "sdxl-tiny-golden.safetensors")
kw = dict(prompt="a red sneaker on a white table", negative_prompt="blurry", height=32, width=32,
          num_inference_steps=3, guidance_scale=5.0)
golden["final_sdxl"], golden["image_sdxl"] = run(xl, xg["latents"], kw)

save_file(golden, OUT / "golden.safetensors")
print(json.dumps({k: list(v.shape) for k, v in golden.items()}))
