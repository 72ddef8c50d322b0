#!/usr/bin/env python3
"""Reference few-step runs (LCM, SD-Turbo-style) with diffusers' StableDiffusionPipeline on the
tiny SD 1-like pipeline (tests/fixtures/pipeline/sd1-tiny), for kernels-tests/fewstep.rs:

    tests/fixtures/pipeline/lcm-unet/           sd1-tiny's U-Net with `time_cond_proj_dim` 16
                                                (an LCM-distilled U-Net's guidance embedding),
                                                every weight perturbed, stored in f16
    tests/fixtures/pipeline/lcm-scheduler.json  SimianLuo/LCM_Dreamshaper_v7's scheduler config
    tests/fixtures/pipeline/fewstep-golden.safetensors
        for each case final_<case> (latents before VAE scaling, [1, 4, 8, 8]) and image_<case>
        ([1, 32, 32, 3] in [0, 1]); 32², torch.Generator("cpu").manual_seed(42) for the
        initial latents and every step's noise:
        - lcm4: the LCM U-Net, LCMScheduler, 4 steps, guidance 8 (w-embedding of 7, one pass;
          the negative prompt is not used, as in diffusers)
        - lcm1: the LCM U-Net, 1 step (no step noise), guidance 2
        - lcm_cfg: sd1-tiny's own U-Net with LCMScheduler (LCM-LoRA's way: classifier-free
          guidance batch), 3 steps, guidance 1.5
        - turbo1, turbo2: sd1-tiny's U-Net with EulerDiscreteScheduler, `timestep_spacing`
          trailing (SD-Turbo's scheduler config), guidance 0 (no unconditional pass), 1 and 2
          steps
        - turbo_a2: EulerAncestralDiscreteScheduler trailing, guidance 0, 2 steps

    .venv/bin/python tools/make_fewstep_fixture.py   (after tools/make_pipeline_fixture.py)
"""
import json
from pathlib import Path

import torch
from diffusers import (EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, LCMScheduler,
                       StableDiffusionPipeline, UNet2DConditionModel)
from safetensors.torch import save_file

from fixture_common import clip_tokenizer, perturb

root = Path("tests/fixtures/pipeline")
PROMPT = "a red sneaker on a white table"
NEGATIVE = "blurry"
tok = clip_tokenizer()
pipe = StableDiffusionPipeline.from_pretrained(root / "sd1-tiny", tokenizer=tok, safety_checker=None,
                                               feature_extractor=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)

torch.manual_seed(11)
cfg = dict(pipe.unet.config)
cfg["time_cond_proj_dim"] = 16
lcm_unet = UNet2DConditionModel.from_config(cfg)
perturb(lcm_unet, half=True)
lcm_unet.to(torch.float16).save_pretrained(root / "lcm-unet", safe_serialization=True)
lcm_unet = UNet2DConditionModel.from_pretrained(root / "lcm-unet", torch_dtype=torch.float32).eval()

# SimianLuo/LCM_Dreamshaper_v7's scheduler/scheduler_config.json.
lcm_config = {"_class_name": "LCMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
              "beta_start": 0.00085, "clip_sample": False, "clip_sample_range": 1.0,
              "dynamic_thresholding_ratio": 0.995, "num_train_timesteps": 1000, "original_inference_steps": 50,
              "prediction_type": "epsilon", "rescale_betas_zero_snr": False, "sample_max_value": 1.0,
              "set_alpha_to_one": True, "steps_offset": 1, "thresholding": False, "timestep_scaling": 10.0,
              "timestep_spacing": "leading", "trained_betas": None}
(root / "lcm-scheduler.json").write_text(json.dumps(lcm_config, indent=2) + "\n")
lcm = LCMScheduler.from_config(lcm_config)
base_config = dict(pipe.scheduler.config)


def run(unet, scheduler, **kw):
    p = StableDiffusionPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=tok, unet=unet,
                                scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                requires_safety_checker=False)
    p.set_progress_bar_config(disable=True)
    kw = dict(prompt=PROMPT, negative_prompt=NEGATIVE, height=32, width=32, **kw)
    with torch.no_grad():
        final = p(**kw, generator=torch.Generator("cpu").manual_seed(42), output_type="latent").images
        image = p(**kw, generator=torch.Generator("cpu").manual_seed(42), output_type="np").images
    return final.contiguous(), torch.from_numpy(image).contiguous()


trailing = dict(base_config, timestep_spacing="trailing")
cases = {
    "lcm4": (lcm_unet, lcm, dict(num_inference_steps=4, guidance_scale=8.0)),
    "lcm1": (lcm_unet, lcm, dict(num_inference_steps=1, guidance_scale=2.0)),
    "lcm_cfg": (pipe.unet, LCMScheduler.from_config(base_config), dict(num_inference_steps=3, guidance_scale=1.5)),
    "turbo1": (pipe.unet, EulerDiscreteScheduler.from_config(trailing), dict(num_inference_steps=1, guidance_scale=0.0)),
    "turbo2": (pipe.unet, EulerDiscreteScheduler.from_config(trailing), dict(num_inference_steps=2, guidance_scale=0.0)),
    "turbo_a2": (pipe.unet, EulerAncestralDiscreteScheduler.from_config(trailing),
                 dict(num_inference_steps=2, guidance_scale=0.0)),
}
golden = {}
for name, (unet, scheduler, kw) in cases.items():
    final, image = run(unet, scheduler, **kw)
    golden[f"final_{name}"], golden[f"image_{name}"] = final, image
    print(name, [float(t) for t in scheduler.timesteps], tuple(final.shape))
save_file(golden, root / "fewstep-golden.safetensors")
