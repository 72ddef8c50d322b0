#!/usr/bin/env python3
"""Builds tiny random-weight UNet2DConditionModels of the SDXL and LCM kinds with diffusers
(the reference) and dumps one forward pass each, for kernels-tests/unet.rs.

    tests/fixtures/unet/<name>/config.json, diffusion_pytorch_model.safetensors (every
    tensor perturbed, stored in f16), golden.safetensors with sample [2, 4, 8, 12] (NCHW), timestep [1],
    encoder_hidden_states [2, 77, cross_dim], the added conditions, and out.

- sdxl-tiny: SDXL's structure — no transformer at the first level (DownBlock2D first),
  `transformer_layers_per_block` (1, 2) so the second level and the mid block have two
  transformer blocks each, `addition_embed_type="text_time"` with `text_embeds` [2, 16] and
  the six `time_ids` per image (original size, crop top-left, target size), heads per block
  given as `attention_head_dim` (diffusers reads them as head counts), linear projections.
- lcm-tiny: an SD 1.x-like U-Net with `time_cond_proj_dim` (LCM's guidance embedding,
  `timestep_cond` [2, 16]).

    .venv/bin/python tools/make_sdxl_unet_fixtures.py
"""
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

from fixture_common import perturb

torch.manual_seed(7)
COMMON = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=8)
TEXT_EMBED = 16
TIME_EMBED = 8
CONFIGS = {
    "sdxl-tiny": dict(COMMON, block_out_channels=(32, 64), cross_attention_dim=40,
                      attention_head_dim=(2, 4), use_linear_projection=True,
                      transformer_layers_per_block=(1, 2),
                      down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                      up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                      addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED,
                      projection_class_embeddings_input_dim=TEXT_EMBED + 6 * TIME_EMBED),
    "lcm-tiny": dict(COMMON, block_out_channels=(32, 64), cross_attention_dim=24,
                     attention_head_dim=4, time_cond_proj_dim=16,
                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
}
for name, kw in CONFIGS.items():
    out = Path("tests/fixtures/unet") / name
    out.mkdir(parents=True, exist_ok=True)
    unet = UNet2DConditionModel(**kw)
    perturb(unet, half=True)  # stored in f16: half the size
    sample = torch.randn(2, 4, 8, 12)
    t = torch.tensor([601.0])
    ehs = torch.randn(2, 77, kw["cross_attention_dim"])
    golden = {"sample": sample, "timestep": t, "encoder_hidden_states": ehs}
    args = {}
    if name.startswith("sdxl"):
        text_embeds = torch.randn(2, TEXT_EMBED)
        # (original h, w, crop top, left, target h, w) per image, as the SDXL pipeline passes.
        time_ids = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0],
                                 [768.0, 1344.0, 16.0, 32.0, 1024.0, 1024.0]])
        args["added_cond_kwargs"] = {"text_embeds": text_embeds, "time_ids": time_ids}
        golden.update(text_embeds=text_embeds, time_ids=time_ids)
    else:
        timestep_cond = torch.randn(2, kw["time_cond_proj_dim"])
        args["timestep_cond"] = timestep_cond
        golden["timestep_cond"] = timestep_cond
    with torch.no_grad():
        o = unet(sample, t, ehs, **args).sample
    golden["out"] = o.contiguous()
    save_file(golden, out / "golden.safetensors")
    unet.half().save_pretrained(out, safe_serialization=True)
    print(name, tuple(o.shape), sum(p.numel() for p in unet.parameters()), "parameters")
