#!/usr/bin/env python3
"""Single-file (original CompVis / Stability "LDM") checkpoints of the tiny pipelines, and
reference runs of them through diffusers' `from_single_file`, for kernels-tests/pipeline.rs.

Run tools/make_pipeline_fixture.py and tools/make_pipeline_fixture_sd2.py first. Then:

    .venv/bin/python tools/make_single_file_fixtures.py

writes
    tests/fixtures/pipeline/sd1-tiny.safetensors   SD 1.x layout, f16: model.diffusion_model.*,
        first_stage_model.*, cond_stage_model.transformer.text_model.*
    tests/fixtures/pipeline/sd2-tiny.safetensors   SD 2.x layout, bf16: the OpenCLIP text tower
        cond_stage_model.model.* with fused attn.in_proj_weight / in_proj_bias, one extra
        final resblock (SD 2 uses the penultimate layer, so it is never run), text_projection
    tests/fixtures/pipeline/sdxl-tiny.safetensors  SDXL's SGM layout, f16 (after
        tools/make_pipeline_fixture_sdxl.py): conditioner.embedders.0.transformer.* (CLIP),
        conditioner.embedders.1.model.* (OpenCLIP, fused in_proj, text_projection as x @ P),
        model.diffusion_model.label_emb.* (add_embedding), first_stage_model.*
    tests/fixtures/pipeline/single-file-golden.safetensors
        sd1_image / sd2_image: diffusers' StableDiffusionPipeline.from_single_file(file,
        config=<the diffusers folder>, torch_dtype=float32) run with the same prompts and
        initial latents as the folder goldens (4 DDIM steps, guidance 7.5); sdxl_image:
        StableDiffusionXLPipeline.from_single_file, the SDXL fixture's "neg" case
    tests/fixtures/ldm-headers.json
        {"sd15": {name: shape}, "sd21": {...}, "sdxl": {...}, "sdxl_refiner": {...}}: the
        tensor names and shapes of full-size SD 1.5, SD 2.1, SDXL base and refiner single-file
        checkpoints (no weights), for the architecture inference test.

    .venv/bin/python tools/make_single_file_fixtures.py convert FOLDER OUT.safetensors [--open-clip]

converts any diffusers SD folder (e.g. tools/make_full_size_sd15.py's DIR/model) to one f32
single file, checked the same way.

The diffusers → LDM renaming below is written from the structure of the two code bases; it is
verified, not assumed: every single file is loaded back with diffusers' own converter
(`from_single_file`) and each network's state dict must equal the folder's exactly (in f32).
"""
import json
import re
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from fixture_common import clip_tokenizer

ROOT = Path("tests/fixtures/pipeline")
RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
          ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def resnet_leaf(rest):
    """A diffusers resnet's sub-module names in the original layout."""
    for d, o in RESNET:
        rest = rest.replace(d, o)
    return rest


def unet_to_ldm(sd, cfg):
    lpb = cfg["layers_per_block"]
    up_attn = [t == "CrossAttnUpBlock2D" for t in cfg["up_block_types"]]
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
    out = {}
    for k, v in sd.items():
        mod, _, leaf = k.rpartition(".")
        if mod in fixed:
            new = f"{fixed[mod]}.{leaf}"
        elif m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k):
            b, l = int(m[1]), int(m[2])
            new = f"input_blocks.{1 + b * (lpb + 1) + l}.0.{resnet_leaf(m[3])}"
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", k):
            new = f"input_blocks.{1 + int(m[1]) * (lpb + 1) + int(m[2])}.1.{m[3]}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", k):
            new = f"input_blocks.{1 + int(m[1]) * (lpb + 1) + lpb}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", k):
            idx = {("resnets", 0): 0, ("attentions", 0): 1, ("resnets", 1): 2}[(m[1], int(m[2]))]
            rest = resnet_leaf(m[3]) if m[1] == "resnets" else m[3]
            new = f"middle_block.{idx}.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k):
            new = f"output_blocks.{int(m[1]) * (lpb + 1) + int(m[2])}.0.{resnet_leaf(m[3])}"
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", k):
            new = f"output_blocks.{int(m[1]) * (lpb + 1) + int(m[2])}.1.{m[3]}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", k):
            b = int(m[1])
            new = f"output_blocks.{b * (lpb + 1) + lpb}.{2 if up_attn[b] else 1}.conv.{m[2]}"
        else:
            raise KeyError(k)
        out["model.diffusion_model." + new] = v
    return out


def vae_to_ldm(sd, cfg):
    n = len(cfg["block_out_channels"])
    out = {}
    for k, v in sd.items():
        new = k.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.",
                     lambda m: f"decoder.up.{n - 1 - int(m[1])}.block.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                     lambda m: f"decoder.up.{n - 1 - int(m[1])}.upsample.", new)
        new = new.replace("mid_block.resnets.0.", "mid.block_1.").replace("mid_block.resnets.1.", "mid.block_2.")
        if "mid_block.attentions.0." in new:
            new = new.replace("mid_block.attentions.0.", "mid.attn_1.")
            for d, o in [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]:
                new = new.replace(f".{d}.", f".{o}.")
            if v.dim() == 2:  # the original attention projections are 1×1 convs
                v = v[:, :, None, None]
        out["first_stage_model." + new] = v
    return out


def clip_to_ldm(sd, prefix="cond_stage_model.transformer."):
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v
            for k, v in sd.items()}


def open_clip_to_ldm(sd, n_layers, hidden, extra_layer=True, gen=None, p="cond_stage_model.model."):
    """With `text_projection.weight` in `sd` (SDXL's CLIPTextModelWithProjection) the real
    projection (OpenCLIP's x @ P: the transpose), else a random or zero one (unused by SD 2)."""
    projection = sd.get("text_projection.weight")
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    out = {p + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
           p + "positional_embedding": sd["embeddings.position_embedding.weight"],
           p + "ln_final.weight": sd["final_layer_norm.weight"], p + "ln_final.bias": sd["final_layer_norm.bias"]}
    for i in range(n_layers):
        a, r = f"encoder.layers.{i}.", f"{p}transformer.resblocks.{i}."
        for w in ("weight", "bias"):
            out[r + f"attn.in_proj_{w}"] = torch.cat([sd[a + f"self_attn.{q}_proj.{w}"] for q in "qkv"])
            out[r + f"attn.out_proj.{w}"] = sd[a + f"self_attn.out_proj.{w}"]
            out[r + f"ln_1.{w}"] = sd[a + f"layer_norm1.{w}"]
            out[r + f"ln_2.{w}"] = sd[a + f"layer_norm2.{w}"]
            out[r + f"mlp.c_fc.{w}"] = sd[a + f"mlp.fc1.{w}"]
            out[r + f"mlp.c_proj.{w}"] = sd[a + f"mlp.fc2.{w}"]
    if extra_layer:  # SD 2 checkpoints keep the last layer the model never runs
        r0 = f"{p}transformer.resblocks.0."
        for k in [k for k in out if k.startswith(r0)]:
            out[k.replace(r0, f"{p}transformer.resblocks.{n_layers}.")] = torch.randn(
                out[k].shape, generator=gen, dtype=out[k].dtype) if gen is not None else torch.zeros_like(out[k])
    if projection is not None:
        out[p + "text_projection"] = projection.T.contiguous()
    else:
        out[p + "text_projection"] = (torch.randn(hidden, hidden, generator=gen) if gen is not None
                                      else torch.zeros(hidden, hidden))
    out[p + "logit_scale"] = torch.tensor(4.6052)
    return out


def folder_to_ldm(folder, open_clip):
    unet_cfg = json.loads((folder / "unet/config.json").read_text())
    vae_cfg = json.loads((folder / "vae/config.json").read_text())
    te_cfg = json.loads((folder / "text_encoder/config.json").read_text())
    ckpt = {}
    ckpt.update(unet_to_ldm(load_file(folder / "unet/diffusion_pytorch_model.safetensors"), unet_cfg))
    ckpt.update(vae_to_ldm(load_file(folder / "vae/diffusion_pytorch_model.safetensors"), vae_cfg))
    te = load_file(folder / "text_encoder/model.safetensors")
    if open_clip:
        ckpt.update(open_clip_to_ldm(te, te_cfg["num_hidden_layers"], te_cfg["hidden_size"],
                                     gen=torch.Generator().manual_seed(7)))
    else:
        ckpt.update(clip_to_ldm(te))
    return ckpt


def sdxl_folder_to_sgm(folder):
    """SDXL base's single-file (SGM) layout: CLIP ViT-L as conditioner.embedders.0.transformer,
    OpenCLIP with its projection as conditioner.embedders.1.model, label_emb for the U-Net's
    add_embedding."""
    cfg = {c: json.loads((folder / c / "config.json").read_text()) for c in ("unet", "vae", "text_encoder_2")}
    ckpt = unet_to_ldm(load_file(folder / "unet/diffusion_pytorch_model.safetensors"), cfg["unet"])
    ckpt.update(vae_to_ldm(load_file(folder / "vae/diffusion_pytorch_model.safetensors"), cfg["vae"]))
    ckpt.update(clip_to_ldm(load_file(folder / "text_encoder/model.safetensors"), "conditioner.embedders.0.transformer."))
    te2 = cfg["text_encoder_2"]
    ckpt.update(open_clip_to_ldm(load_file(folder / "text_encoder_2/model.safetensors"), te2["num_hidden_layers"],
                                 te2["hidden_size"], extra_layer=False, p="conditioner.embedders.1.model."))
    return ckpt


def check_roundtrip(folder, ckpt, tok, xl=False):
    """diffusers' own converter must give back the folder's weights exactly."""
    cls = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
    kw = dict(tokenizer=tok, tokenizer_2=clip_tokenizer("!")) if xl else dict(tokenizer=tok, safety_checker=None)
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "x.safetensors"
        save_file({k: v.contiguous() for k, v in ckpt.items()}, f)
        pipe = cls.from_single_file(f, config=str(folder), torch_dtype=torch.float32, local_files_only=True, **kw)
    ref = cls.from_pretrained(folder, torch_dtype=torch.float32, **kw)
    for name in ("unet", "vae", "text_encoder") + (("text_encoder_2",) if xl else ()):
        a, b = getattr(pipe, name).state_dict(), getattr(ref, name).state_dict()
        assert a.keys() == b.keys(), (name, set(a) ^ set(b))
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    print(folder, "single-file round trip exact")


def run(pipe, latents, **kw):
    with torch.no_grad():
        return pipe(**kw, height=32, width=32, num_inference_steps=4, guidance_scale=7.5,
                    latents=latents.clone(), output_type="np").images


def tiny():
    golden = {}
    cases = [("sd1-tiny", False, torch.float16, "<|endoftext|>",
              dict(prompt="a red sneaker on a white table", negative_prompt="blurry")),
             ("sd2-tiny", True, torch.bfloat16, "!",
              dict(prompt="a blue dress!! on a mannequin", negative_prompt="low quality"))]
    for name, open_clip, dtype, pad, prompts in cases:
        folder = ROOT / name
        tok = clip_tokenizer(pad)
        ckpt = folder_to_ldm(folder, open_clip)
        check_roundtrip(folder, ckpt, tok)
        path = ROOT / f"{name}.safetensors"
        save_file({k: v.to(dtype).contiguous() for k, v in ckpt.items()}, path)
        pipe = StableDiffusionPipeline.from_single_file(path, config=str(folder), tokenizer=tok, safety_checker=None,
                                                        torch_dtype=torch.float32, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        gold = load_file(ROOT / f"{name}-golden.safetensors")
        golden[name.split("-")[0] + "_image"] = torch.from_numpy(run(pipe, gold["latents"], **prompts)).contiguous()
        print(name, path.stat().st_size // 1024, "KiB")
    # SDXL in the SGM layout, f16 as the folder; the "neg" case of make_pipeline_fixture_sdxl.py.
    folder, tok = ROOT / "sdxl-tiny", clip_tokenizer()
    ckpt = sdxl_folder_to_sgm(folder)
    check_roundtrip(folder, ckpt, tok, xl=True)
    path = ROOT / "sdxl-tiny.safetensors"
    save_file({k: v.to(torch.float16).contiguous() for k, v in ckpt.items()}, path)
    pipe = StableDiffusionXLPipeline.from_single_file(path, config=str(folder), tokenizer=tok,
                                                      tokenizer_2=clip_tokenizer("!"), torch_dtype=torch.float32,
                                                      local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    gold = load_file(ROOT / "sdxl-tiny-golden.safetensors")
    with torch.no_grad():
        image = pipe(prompt="a red sneaker on a white table", negative_prompt="blurry", height=32, width=32,
                     num_inference_steps=3, guidance_scale=5.0, latents=gold["latents"].clone(),
                     output_type="np").images
    golden["sdxl_image"] = torch.from_numpy(image).contiguous()
    print("sdxl-tiny", path.stat().st_size // 1024, "KiB")
    save_file(golden, ROOT / "single-file-golden.safetensors")


def headers():
    """Names and shapes of full-size SD 1.5 / 2.1 single files (meta tensors: no weights)."""
    base = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    vae_cfg = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                   up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, latent_channels=4)
    out = {}
    with torch.device("meta"):
        for name, unet_kw, te_kw, open_clip in [
            ("sd15", base, dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                num_attention_heads=12, hidden_act="quick_gelu"), False),
            ("sd21", dict(base, sample_size=96, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
                          use_linear_projection=True),
             dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                  hidden_act="gelu"), True)]:
            unet = UNet2DConditionModel(**unet_kw)
            vae = AutoencoderKL(**vae_cfg)
            te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **te_kw))
            sd = unet_to_ldm(unet.state_dict(), unet.config)
            sd.update(vae_to_ldm(vae.state_dict(), vae.config))
            tsd = te.state_dict()
            if open_clip:
                sd.update(open_clip_to_ldm(tsd, 23, 1024))
            else:
                sd.update(clip_to_ldm(tsd))
            out[name] = {k: list(v.shape) for k, v in sorted(sd.items())}
        # SDXL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0's configs), SGM layout.
        unet = UNet2DConditionModel(
            sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2, cross_attention_dim=2048,
            attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)
        vae = AutoencoderKL(**vae_cfg)
        te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, hidden_size=768,
                                          intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                                          hidden_act="quick_gelu"))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=49408, max_position_embeddings=77, hidden_size=1280, intermediate_size=5120,
            num_hidden_layers=32, num_attention_heads=20, hidden_act="gelu", projection_dim=1280))
        sd = unet_to_ldm(unet.state_dict(), unet.config)
        sd.update(vae_to_ldm(vae.state_dict(), vae.config))
        sd.update(clip_to_ldm(te.state_dict(), "conditioner.embedders.0.transformer."))
        sd.update(open_clip_to_ldm(te2.state_dict(), 32, 1280, extra_layer=False, p="conditioner.embedders.1.model."))
        out["sdxl"] = {k: list(v.shape) for k, v in sorted(sd.items())}
        # SDXL refiner 1.0 (stabilityai/stable-diffusion-xl-refiner-1.0's configs): OpenCLIP
        # alone as conditioner.embedders.0.model, five time ids.
        unet = UNet2DConditionModel(
            sample_size=128, block_out_channels=(384, 768, 1536, 1536), layers_per_block=2,
            cross_attention_dim=1280, attention_head_dim=(6, 12, 24, 24), transformer_layers_per_block=4,
            use_linear_projection=True,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2560)
        sd = unet_to_ldm(unet.state_dict(), unet.config)
        sd.update(vae_to_ldm(vae.state_dict(), vae.config))
        sd.update(open_clip_to_ldm(te2.state_dict(), 32, 1280, extra_layer=False, p="conditioner.embedders.0.model."))
        out["sdxl_refiner"] = {k: list(v.shape) for k, v in sorted(sd.items())}
    Path("tests/fixtures/ldm-headers.json").write_text(json.dumps(out, separators=(",", ":")))
    print("headers", {k: len(v) for k, v in out.items()})


if __name__ == "__main__":
    import sys
    if sys.argv[1:2] == ["convert"]:
        folder, out, oc = Path(sys.argv[2]), Path(sys.argv[3]), "--open-clip" in sys.argv
        pad = "!" if oc else "<|endoftext|>"
        tok = clip_tokenizer(pad)
        ckpt = folder_to_ldm(folder, oc)
        check_roundtrip(folder, ckpt, tok)
        save_file({k: v.contiguous() for k, v in ckpt.items()}, out)
        print("wrote", out)
    else:
        headers()
        tiny()
