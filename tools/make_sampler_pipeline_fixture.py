#!/usr/bin/env python3
"""Whole-pipeline runs with the samplers added for issue 14 on the tiny SD 1-like pipeline
(tests/fixtures/pipeline/sd1-tiny), for kernels-tests/sampler.rs: the sampler's program
recorded into the step plan, not only run eagerly.

    tests/fixtures/pipeline/sampler-golden.safetensors
        image_<case> [1, 32, 32, 3], seed 42, prompt and negative prompt, guidance 7.5:
        - heun4: HeunDiscreteScheduler from sd1-tiny's config, 4 steps (7 model calls)
        - lms5: LMSDiscreteScheduler, 5 steps
        - heun_img06: Heun image-to-image (img2img-input.png) at strength 0.6 of 4 steps
          (starts at index 4, a first-order step)
        - lms_img06: LMS image-to-image at 0.6 of 5 steps (its first step already takes
          order min(i + 1, 4))
        - dpm2_4, dpm2_img06: KDPM2DiscreteScheduler (DPM2) as heun4 and heun_img06
        - dpm2a_4, dpm2a_img06: KDPM2AncestralDiscreteScheduler likewise (noise from the seed
          after every second-order update)
        - unipc5, unipc_img06, deis5, deis_img06: UniPCMultistepScheduler and
          DEISMultistepScheduler, 5 steps, text-to-image and image-to-image at 0.6 (from
          index 2, their multistep history empty there)
        - dpmsde4, dpmsde_img06: DPMSolverSDEScheduler (DPM++ SDE) with noise_sampler_seed 42
          (the Brownian tree seeded with the image seed, as the engine seeds it), 4 steps (7
          calls) and image-to-image at 0.6 (from index 4)
        - unipc_inpaint: UniPC in 4-channel inpainting (StableDiffusionInpaintPipeline with the
          ordinary U-Net, mask inpaint-mask.png, strength 1, 5 steps): the known region blended
          into the sample between steps, which UniPC's corrector does not read

    .venv/bin/python tools/make_sampler_pipeline_fixture.py
"""
from pathlib import Path

import torch
from diffusers import (DEISMultistepScheduler, DPMSolverSDEScheduler, HeunDiscreteScheduler, StableDiffusionInpaintPipeline,
                       UniPCMultistepScheduler, KDPM2AncestralDiscreteScheduler, KDPM2DiscreteScheduler,
                       LMSDiscreteScheduler,
                       StableDiffusionImg2ImgPipeline, StableDiffusionPipeline)
from PIL import Image
from safetensors.torch import save_file

from fixture_common import clip_tokenizer

root = Path("tests/fixtures/pipeline")
tok = clip_tokenizer()
t2i = StableDiffusionPipeline.from_pretrained(root / "sd1-tiny", tokenizer=tok, safety_checker=None,
                                              feature_extractor=None, requires_safety_checker=False)
i2i = StableDiffusionImg2ImgPipeline(**{k: v for k, v in t2i.components.items() if k != "image_encoder"})
inp = StableDiffusionInpaintPipeline(**{k: v for k, v in t2i.components.items() if k != "image_encoder"})
for p in (t2i, i2i, inp):
    p.set_progress_bar_config(disable=True)
cfg = t2i.scheduler.config
image = Image.open(root / "img2img-input.png").convert("RGB")
kw = dict(prompt="a red sneaker on a white table", negative_prompt="blurry", guidance_scale=7.5, output_type="np")
cases = {
    "heun4": (t2i, HeunDiscreteScheduler, dict(num_inference_steps=4, height=32, width=32)),
    "lms5": (t2i, LMSDiscreteScheduler, dict(num_inference_steps=5, height=32, width=32)),
    "heun_img06": (i2i, HeunDiscreteScheduler, dict(num_inference_steps=4, image=image, strength=0.6)),
    "lms_img06": (i2i, LMSDiscreteScheduler, dict(num_inference_steps=5, image=image, strength=0.6)),
    "dpm2_4": (t2i, KDPM2DiscreteScheduler, dict(num_inference_steps=4, height=32, width=32)),
    "dpm2_img06": (i2i, KDPM2DiscreteScheduler, dict(num_inference_steps=4, image=image, strength=0.6)),
    "dpm2a_4": (t2i, KDPM2AncestralDiscreteScheduler, dict(num_inference_steps=4, height=32, width=32)),
    "dpm2a_img06": (i2i, KDPM2AncestralDiscreteScheduler, dict(num_inference_steps=4, image=image, strength=0.6)),
    "unipc5": (t2i, UniPCMultistepScheduler, dict(num_inference_steps=5, height=32, width=32)),
    "unipc_img06": (i2i, UniPCMultistepScheduler, dict(num_inference_steps=5, image=image, strength=0.6)),
    "deis5": (t2i, DEISMultistepScheduler, dict(num_inference_steps=5, height=32, width=32)),
    "deis_img06": (i2i, DEISMultistepScheduler, dict(num_inference_steps=5, image=image, strength=0.6)),
    "dpmsde4": (t2i, DPMSolverSDEScheduler, dict(num_inference_steps=4, height=32, width=32)),
    "dpmsde_img06": (i2i, DPMSolverSDEScheduler, dict(num_inference_steps=4, image=image, strength=0.6)),
    "unipc_inpaint": (inp, UniPCMultistepScheduler,
                      dict(num_inference_steps=5, image=image, mask_image=Image.open(root / "inpaint-mask.png"),
                           strength=1.0, height=32, width=32)),
}
out = {}
with torch.no_grad():
    for name, (pipe, cls, extra) in cases.items():
        extra_cfg = dict(noise_sampler_seed=42) if cls is DPMSolverSDEScheduler else {}
        pipe.scheduler = cls.from_config(cfg, **extra_cfg)
        img = pipe(**kw, **extra, generator=torch.Generator("cpu").manual_seed(42)).images
        out[f"image_{name}"] = torch.from_numpy(img).contiguous()
        print(name, len(pipe.scheduler.timesteps), "timesteps")
save_file(out, root / "sampler-golden.safetensors")
