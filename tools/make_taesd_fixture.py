#!/usr/bin/env python3
"""Random-weight tiny autoencoders (diffusers AutoencoderTiny, the TAESD architecture) and
reference outputs, for kernels-tests/taesd.rs:

    tests/fixtures/pipeline/taesd-tiny/      4 levels (8× like TAESD), 16 channels, blocks
                                             (1, 2, 2, 2) / (2, 2, 2, 1); config.json +
                                             diffusion_pytorch_model.safetensors, and
                                             taesd_decoder.safetensors: its decoder in the
                                             original TAESD release's layout (`N.…`, Clamp at 0)
    tests/fixtures/pipeline/taesd-f4-tiny/   3 levels (4×, like the tiny SD 1 and SDXL fixtures'
                                             VAEs: a tiny autoencoder must match the model's factor)
    tests/fixtures/pipeline/taesd-golden.safetensors
        latents [1, 4, 6, 10] (×3: the tanh clamp matters), decoded [1, 3, 48, 80];
        image [1, 3, 48, 80] in [−1, 1], encoded [1, 4, 6, 10];
        sd1_image [1, 32, 32, 3]: StableDiffusionPipeline (sd1-tiny) with vae = taesd-f4-tiny,
            seed 42, 4 steps, guidance 7.5, the sneaker prompt and "blurry";
        sdxl_image [1, 32, 32, 3]: StableDiffusionXLPipeline (sdxl-tiny) with vae =
            taesd-f4-tiny, the sdxl golden's initial latents, 3 steps, guidance 5.

    .venv/bin/python tools/make_taesd_fixture.py
"""
from pathlib import Path

import torch
from diffusers import AutoencoderTiny, StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import load_file, save_file

from fixture_common import clip_tokenizer

root = Path("tests/fixtures/pipeline")


def tiny(levels, seed):
    torch.manual_seed(seed)
    enc = (1,) + (2,) * (levels - 1)
    dec = (2,) * (levels - 1) + (1,)
    ae = AutoencoderTiny(encoder_block_out_channels=(16,) * levels, decoder_block_out_channels=(16,) * levels,
                         num_encoder_blocks=enc, num_decoder_blocks=dec).eval()
    with torch.no_grad():
        for p in ae.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return ae


out = {}
ae = tiny(4, 0)
ae.save_pretrained(root / "taesd-tiny", safe_serialization=True)
sd = {k.removeprefix("decoder.layers."): v for k, v in ae.state_dict().items() if k.startswith("decoder.layers.")}
orig = {}
for k, v in sd.items():
    i, rest = k.split(".", 1)
    orig[f"{int(i) + 1}.{rest}"] = v.contiguous()
save_file(orig, root / "taesd-tiny" / "taesd_decoder.safetensors")
xl = tiny(3, 1)
xl.save_pretrained(root / "taesd-f4-tiny", safe_serialization=True)

g = torch.Generator().manual_seed(3)
with torch.no_grad():
    out["latents"] = torch.randn(1, 4, 6, 10, generator=g) * 3
    out["decoded"] = ae.decode(out["latents"]).sample
    out["image"] = (torch.rand(1, 3, 48, 80, generator=g) * 2 - 1)
    out["encoded"] = ae.encode(out["image"]).latents

    tok = clip_tokenizer()
    p = StableDiffusionPipeline.from_pretrained(root / "sd1-tiny", tokenizer=tok, vae=xl, safety_checker=None,
                                                feature_extractor=None, requires_safety_checker=False)
    p.set_progress_bar_config(disable=True)
    out["sd1_image"] = torch.from_numpy(p(prompt="a red sneaker on a white table", negative_prompt="blurry",
                                          num_inference_steps=4, guidance_scale=7.5, height=32, width=32,
                                          output_type="np", generator=torch.Generator().manual_seed(42)).images)

    px = StableDiffusionXLPipeline.from_pretrained(root / "sdxl-tiny", tokenizer=clip_tokenizer(),
                                                   tokenizer_2=clip_tokenizer("!"), vae=xl, torch_dtype=torch.float32)
    px.set_progress_bar_config(disable=True)
    xg = load_file(root / "sdxl-tiny-golden.safetensors")
    out["sdxl_image"] = torch.from_numpy(px(prompt="a red sneaker on a white table", negative_prompt="blurry",
                                            height=32, width=32, num_inference_steps=3, guidance_scale=5.0,
                                            latents=xg["latents"], output_type="np").images)
save_file({k: v.contiguous() for k, v in out.items()}, root / "taesd-golden.safetensors")
print({k: tuple(v.shape) for k, v in out.items()})
