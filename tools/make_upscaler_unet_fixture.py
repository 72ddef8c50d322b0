#!/usr/bin/env python3
"""A tiny random-weight UNet2DConditionModel shaped like the 4× upscaler's
(stabilityai/stable-diffusion-x4-upscaler: 7 input channels — the latents and the noised
low-res image —, `num_class_embeds` for the noise level, `only_cross_attention` on the first
attention levels, linear projections) and one forward pass, for kernels-tests/unet_added.rs.

    tests/fixtures/unet/upscaler-tiny/config.json, diffusion_pytorch_model.safetensors (f16),
    golden.safetensors: sample [2, 7, 8, 12], timestep [1], encoder_hidden_states [2, 77, 24],
    class_labels [2] (noise levels 20 and 3, as float), out [2, 4, 8, 12].

    .venv/bin/python tools/make_upscaler_unet_fixture.py
"""
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

from fixture_common import perturb

torch.manual_seed(8)
out = Path("tests/fixtures/unet/upscaler-tiny")
out.mkdir(parents=True, exist_ok=True)
unet = UNet2DConditionModel(sample_size=8, in_channels=7, out_channels=4, layers_per_block=1, norm_num_groups=8,
                            block_out_channels=(16, 32, 32), cross_attention_dim=24, attention_head_dim=4,
                            use_linear_projection=True, num_class_embeds=50,
                            only_cross_attention=[True, True, False],
                            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
perturb(unet, half=True)
sample = torch.randn(2, 7, 8, 12)
t = torch.tensor([301.0])
ehs = torch.randn(2, 77, 24)
labels = torch.tensor([20, 3])
with torch.no_grad():
    o = unet(sample, t, ehs, class_labels=labels).sample
save_file({"sample": sample, "timestep": t, "encoder_hidden_states": ehs, "class_labels": labels.float(),
           "out": o.contiguous()}, out / "golden.safetensors")
unet.half().save_pretrained(out, safe_serialization=True)
print(tuple(o.shape), sum(p.numel() for p in unet.parameters()), "parameters")
