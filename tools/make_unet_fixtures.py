#!/usr/bin/env python3
"""Builds tiny random-weight UNet2DConditionModels with diffusers (the reference) and dumps
one forward pass each, for kernels-tests/unet.rs (latent 8×12: divisible by every level).

    tests/fixtures/unet/<name>/config.json, diffusion_pytorch_model.safetensors (every
    tensor perturbed), golden.safetensors with sample [2, 4, h, w] (NCHW), timestep [1],
    encoder_hidden_states [2, 77, cross_dim] and out = unet(sample, t, ehs).sample.

    .venv/bin/python tools/make_unet_fixtures.py
"""
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

torch.manual_seed(0)
COMMON = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=8)
CONFIGS = {
    # SD 1.x-like: conv proj_in/out, "attention_head_dim" = 4 heads in every block.
    "sd1-tiny": dict(COMMON, block_out_channels=(32, 64), cross_attention_dim=24, attention_head_dim=4,
                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
    # SD 2.x-like: linear projections, heads per block, three levels with attention at two.
    "sd2-tiny": dict(COMMON, block_out_channels=(32, 48, 64), cross_attention_dim=40,
                     attention_head_dim=(2, 4, 8), use_linear_projection=True,
                     down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
}
for name, kw in CONFIGS.items():
    out = Path("tests/fixtures/unet") / name
    out.mkdir(parents=True, exist_ok=True)
    unet = UNet2DConditionModel(**kw).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    unet.save_pretrained(out, safe_serialization=True)
    sample = torch.randn(2, 4, 8, 12)
    t = torch.tensor([601.0])
    ehs = torch.randn(2, 77, kw["cross_attention_dim"])
    # An odd latent size (9×11): down 9→5→3, up to the skip sizes (diffusers' upsample_size).
    sample_odd = torch.randn(2, 4, 9, 11, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        o = unet(sample, t, ehs).sample
        o_odd = unet(sample_odd, t, ehs).sample
    save_file({"sample": sample, "timestep": t, "encoder_hidden_states": ehs, "out": o.contiguous(),
               "sample_odd": sample_odd, "out_odd": o_odd.contiguous()}, out / "golden.safetensors")
    print(name, tuple(o.shape), sum(p.numel() for p in unet.parameters()), "parameters")
