#!/usr/bin/env python3
"""Dumps scheduler fixtures from diffusers (the reference implementation) for
tests/schedulers.rs: timesteps, sigmas, init_noise_sigma, model-input scales, alphas_cumprod
samples, and whole sampling trajectories on small vectors with recorded model outputs and
recorded noise (diffusers' randn_tensor is replaced by a queue of numpy arrays, so the Rust
side can replay exactly the same noise).

Run from the repo root in a venv with torch, diffusers, numpy:
    .venv/bin/python tools/dump_scheduler_fixtures.py
CI never runs this; the JSON it writes is committed.
"""
import inspect
import json

import numpy as np
import torch
import diffusers
from diffusers import (DDIMScheduler, DDPMScheduler, DEISMultistepScheduler, DPMSolverMultistepScheduler,
                       DPMSolverSDEScheduler,
                       UniPCMultistepScheduler,
                       EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler, KDPM2AncestralDiscreteScheduler,
                       KDPM2DiscreteScheduler,
                       LCMScheduler,
                       LMSDiscreteScheduler, PNDMScheduler)
from diffusers.schedulers import (scheduling_ddpm, scheduling_dpmsolver_multistep, scheduling_dpmsolver_sde,
                                  scheduling_euler_ancestral_discrete, scheduling_k_dpm_2_ancestral_discrete,
                                  scheduling_lcm)

# SD 1.5's scheduler_config.json (PNDM) and SD 2.1's (DDIM, v-prediction), as shipped.
SD15 = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
            beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
            steps_offset=1, skip_prk_steps=True, prediction_type="epsilon")
SD21 = dict(SD15, prediction_type="v_prediction")

N = 8  # vector length


class NoiseQueue:
    """Replaces diffusers' randn_tensor: hands out recorded noise arrays in order."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.drawn = []

    def __call__(self, shape, generator=None, device=None, dtype=None, **kw):
        z = self.rng.standard_normal(shape).astype(np.float32)
        self.drawn.append(z.reshape(-1).tolist())
        return torch.from_numpy(z)


def model(x, t, k):
    """A deterministic stand-in for the U-Net: depends on the sample and the step."""
    base = np.sin(np.arange(N, dtype=np.float32) * 0.7 + k).astype(np.float32)
    return (0.6 * x + 0.4 * base).astype(np.float32)


def blend(x, k):
    """What an inpainting pipeline does between steps: the sample is changed outside the
    scheduler (here a fixed blend towards a pattern)."""
    return (0.8 * x + 0.1 * np.cos(np.arange(N, dtype=np.float32) + k)).astype(np.float32)


def trajectory(name, kind, cls, config, steps, seed=0, eta=None, clip=None, begin=0, blended=False,
               f64=False):
    """`f64`: diffusers' own code run in float64 (its schedule tensors and the sample), for
    schedules whose f32 rounding in diffusers is larger than the test's tolerance (cosine
    betas reach σ ≈ 2·10⁴): the reference is then the exact trajectory."""
    accepted = inspect.signature(cls.__init__).parameters
    cfg = {k: v for k, v in config.items() if k in accepted}
    if clip is not None:
        cfg.update(clip_sample=True, clip_sample_range=clip)
    brownian = cls is DPMSolverSDEScheduler
    if brownian:
        # DPM++ SDE's noise comes from its Brownian tree, seeded with noise_sampler_seed (the
        # engine passes the image seed); the Rust side rebuilds the tree and checks the noise.
        cfg["noise_sampler_seed"] = seed
    sched = cls(**cfg)
    sched.set_timesteps(steps)
    if begin:
        sched.set_begin_index(begin)
    if f64:
        sched.sigmas = sched.sigmas.double()
        sched.alphas_cumprod = sched.alphas_cumprod.double()
    noise = NoiseQueue(seed + 1)
    tree_call = scheduling_dpmsolver_sde.BrownianTreeNoiseSampler.__call__

    def recorded_tree(self, sigma, sigma_next):
        z = tree_call(self, sigma, sigma_next)
        noise.drawn.append(z.reshape(-1).tolist())
        return z

    scheduling_dpmsolver_sde.BrownianTreeNoiseSampler.__call__ = recorded_tree
    for mod in (scheduling_ddpm, scheduling_euler_ancestral_discrete, scheduling_dpmsolver_multistep,
                scheduling_lcm, scheduling_k_dpm_2_ancestral_discrete):
        mod.randn_tensor = noise
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(N).astype(np.float32) * float(sched.init_noise_sigma))
    xs, ms, scales, noises_per_step = [x.tolist()], [], [], []
    for k, t in enumerate(sched.timesteps):
        if k < begin:
            continue
        if blended and k > begin:
            x = blend(x, k)
        inp = sched.scale_model_input(torch.from_numpy(x).reshape(1, N), t).numpy().reshape(-1)
        scales.append(float(inp[0] / x[0]))
        m = model(x, float(t), k)
        before = len(noise.drawn)
        kwargs = {}
        if eta is not None:
            kwargs["eta"] = eta
            z = noise(x.shape)
            kwargs["variance_noise"] = torch.from_numpy(np.array(noise.drawn[-1], np.float32)).reshape(1, N)
            before = len(noise.drawn) - 1
        dt = np.float64 if f64 else np.float32
        out = sched.step(torch.from_numpy(m.astype(dt)).reshape(1, N), t,
                         torch.from_numpy(x.astype(dt)).reshape(1, N), **kwargs).prev_sample
        x = out.numpy().astype(dt).reshape(-1)
        ms.append(m.tolist())
        xs.append(x.tolist())
        drawn = noise.drawn[before:]
        noises_per_step.append(drawn[0] if drawn else None)
    scheduling_dpmsolver_sde.BrownianTreeNoiseSampler.__call__ = tree_call
    sig = getattr(sched, "sigmas", None)
    if brownian:
        # The σ of each model call: diffusers' sigmas at first-order calls, the log-midpoint
        # (its mid_point_sigma, in f32) at second-order ones, then 0.
        s32, out = sched.sigmas, []
        for k in range(len(sched.timesteps)):
            if k % 2 == 0:
                out.append(float(s32[k]))
            else:
                t, tn = -s32[k - 1].log(), -s32[k].log()
                out.append(float((-(t + (tn - t) * 0.5)).exp()))
        sig = out + [0.0]
    elif cls in (KDPM2DiscreteScheduler, KDPM2AncestralDiscreteScheduler):
        # KDPM2 keeps two arrays (σ for its first-order calls, the log-midpoints for its
        # second-order ones); the engine's schedule lists the σ each model call runs at, then 0.
        n = len(sched.timesteps)
        # (the ancestral one reads the midpoint of call k at sigmas_interpol[k - 1])
        mid = 0 if cls is KDPM2DiscreteScheduler else 1
        sig = [sched.sigmas[k] if k % 2 == 0 else sched.sigmas_interpol[k - mid] for k in range(n)] + [0.0]
    return {
        "name": name,
        "sampler": kind,
        # Non-finite values (DPM's lambda_min_clipped = -inf) are not JSON: null.
        # The class, so that per-class defaults apply when the config is read back.
        "config": {"_class_name": cls.__name__} | {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                   for k, v in sched.config.items() if isinstance(v, (int, float, str, bool)) or v is None},
        "steps": steps,
        "eta": eta,
        "begin": begin,
        "blended": blended,
        "float64": f64,
        "brownian_seed": seed if brownian else None,
        "timesteps": [float(t) for t in sched.timesteps],
        "sigmas": [float(s) for s in sig] if sig is not None else None,
        "init_noise_sigma": float(sched.init_noise_sigma),
        "alphas_cumprod": {str(i): float(sched.alphas_cumprod[i]) for i in (0, 1, 250, 500, 999)},
        "input_scales": scales,
        "x": xs,
        "model_outputs": ms,
        "noise": noises_per_step,
    }


cases = []
for steps in (4, 10, 20):
    cases.append(trajectory(f"ddim sd15 {steps}", "ddim", DDIMScheduler, SD15, steps))
cases.append(trajectory("ddim sd21 v-pred trailing 7", "ddim", DDIMScheduler, dict(SD21, timestep_spacing="trailing"), 7))
cases.append(trajectory("ddim eta 0.7 linspace 6", "ddim", DDIMScheduler, dict(SD15, timestep_spacing="linspace"), 6, eta=0.7))
cases.append(trajectory("ddim clip_sample 1.0 5", "ddim", DDIMScheduler, SD15, 5, clip=1.0))
cases.append(trajectory("ddim linear betas 5", "ddim", DDIMScheduler, dict(SD15, beta_schedule="linear", beta_start=0.0001, beta_end=0.02), 5))
cases.append(trajectory("ddim squaredcos 5", "ddim", DDIMScheduler, dict(SD15, beta_schedule="squaredcos_cap_v2"), 5))
cases.append(trajectory("ddpm sd15 6", "ddpm", DDPMScheduler, SD15, 6, seed=3))
cases.append(trajectory("ddpm v-pred trailing 5", "ddpm", DDPMScheduler, dict(SD21, timestep_spacing="trailing"), 5, seed=4))
for steps in (4, 10):
    cases.append(trajectory(f"pndm sd15 {steps}", "pndm", PNDMScheduler, SD15, steps))
cases.append(trajectory("pndm v-pred 6", "pndm", PNDMScheduler, SD21, 6))
cases.append(trajectory("euler sd15 8", "euler", EulerDiscreteScheduler, SD15, 8))
cases.append(trajectory("euler v-pred trailing 6", "euler", EulerDiscreteScheduler, dict(SD21, timestep_spacing="trailing"), 6))
cases.append(trajectory("euler karras linspace 7", "euler", EulerDiscreteScheduler, dict(SD15, use_karras_sigmas=True, timestep_spacing="linspace"), 7))
cases.append(trajectory("euler-a sd15 8", "euler-a", EulerAncestralDiscreteScheduler, SD15, 8, seed=5))
cases.append(trajectory("euler-a v-pred 5", "euler-a", EulerAncestralDiscreteScheduler, SD21, 5, seed=6))
for steps in (5, 20):
    cases.append(trajectory(f"dpm++2m sd15 {steps}", "dpm++2m", DPMSolverMultistepScheduler, SD15, steps))
cases.append(trajectory("dpm++2m karras 12", "dpm++2m-karras", DPMSolverMultistepScheduler, dict(SD15, use_karras_sigmas=True), 12))
cases.append(trajectory("dpm++2m karras 20", "dpm++2m-karras", DPMSolverMultistepScheduler, dict(SD15, use_karras_sigmas=True), 20))
cases.append(trajectory("dpm++2m v-pred trailing 8", "dpm++2m", DPMSolverMultistepScheduler, dict(SD21, timestep_spacing="trailing"), 8))
# LCM: SimianLuo/LCM_Dreamshaper_v7's and latent-consistency/lcm-sdxl's scheduler configs
# (set_alpha_to_one, steps_offset 1, original_inference_steps 50, timestep_scaling 10), one
# step (no noise), SD 1.5's config with set_alpha_to_one false, other distillation lengths
# and scalings (a small one, where c_skip matters), v-prediction and clip_sample.
LCM = dict(SD15, set_alpha_to_one=True, original_inference_steps=50, timestep_scaling=10.0)
for steps in (1, 4, 8):
    cases.append(trajectory(f"lcm {steps}", "lcm", LCMScheduler, LCM, steps, seed=7 + steps))
cases.append(trajectory("lcm sd15 alpha 6", "lcm", LCMScheduler, SD15, 6, seed=9))
cases.append(trajectory("lcm orig 30 scaling 4 v-pred 5", "lcm", LCMScheduler,
                        dict(SD21, original_inference_steps=30, timestep_scaling=4.0), 5, seed=10))
cases.append(trajectory("lcm clip_sample 0.8 3", "lcm", LCMScheduler, LCM, 3, seed=11, clip=0.8))
cases.append(trajectory("lcm 50 of 50", "lcm", LCMScheduler, LCM, 50, seed=12))
# A small timestep_scaling, where c_skip (negligible at SD's 10) weighs in at every step.
cases.append(trajectory("lcm scaling 0.02 6", "lcm", LCMScheduler, dict(LCM, timestep_scaling=0.02), 6, seed=13))
# Heun (second order: 2n − 1 model calls): SD 1.5's config (linspace, its default), Karras
# sigmas, v-prediction with trailing spacing, leading spacing with steps_offset.
cases.append(trajectory("heun sd15 5", "heun", HeunDiscreteScheduler, SD15, 5))
cases.append(trajectory("heun karras 6", "heun", HeunDiscreteScheduler, dict(SD15, use_karras_sigmas=True), 6))
cases.append(trajectory("heun v-pred trailing 4", "heun", HeunDiscreteScheduler,
                        dict(SD21, timestep_spacing="trailing"), 4))
cases.append(trajectory("heun leading 3", "heun", HeunDiscreteScheduler, dict(SD15, timestep_spacing="leading"), 3))
# LMS (order 4, coefficients by numerical integration in diffusers): SD 1.5's config, Karras
# sigmas, v-prediction trailing.
cases.append(trajectory("lms sd15 8", "lms", LMSDiscreteScheduler, SD15, 8))
cases.append(trajectory("lms karras 6", "lms", LMSDiscreteScheduler, dict(SD15, use_karras_sigmas=True), 6))
cases.append(trajectory("lms v-pred trailing 5", "lms", LMSDiscreteScheduler,
                        dict(SD21, timestep_spacing="trailing"), 5))
# DPM++ 2M SDE (sde-dpmsolver++, midpoint): noise every step.
SDE = dict(algorithm_type="sde-dpmsolver++")
cases.append(trajectory("dpm++2m-sde sd15 6", "dpm++2m-sde", DPMSolverMultistepScheduler, dict(SD15, **SDE), 6,
                        seed=14))
cases.append(trajectory("dpm++2m-sde karras 8", "dpm++2m-sde-karras", DPMSolverMultistepScheduler,
                        dict(SD15, use_karras_sigmas=True, **SDE), 8, seed=15))
cases.append(trajectory("dpm++2m-sde v-pred trailing 5", "dpm++2m-sde", DPMSolverMultistepScheduler,
                        dict(SD21, timestep_spacing="trailing", **SDE), 5, seed=16))
# Exponential sigmas (use_exponential_sigmas) where diffusers has them; Euler ancestral has no
# sigma-schedule option: a Karras config runs its plain schedule.
EXP = dict(SD15, use_exponential_sigmas=True)
cases.append(trajectory("euler exponential 6", "euler", EulerDiscreteScheduler, EXP, 6))
cases.append(trajectory("heun exponential 4", "heun", HeunDiscreteScheduler, EXP, 4))
cases.append(trajectory("lms exponential 5", "lms", LMSDiscreteScheduler, EXP, 5))
cases.append(trajectory("dpm++2m exponential 7", "dpm++2m", DPMSolverMultistepScheduler, EXP, 7))
cases.append(trajectory("euler-a karras config 5", "euler-a", EulerAncestralDiscreteScheduler,
                        dict(SD15, use_karras_sigmas=True), 5, seed=17))
# DPM2 (KDPM2DiscreteScheduler, second order through the log-midpoint σ): SD 1.5's config,
# Karras (rounded timesteps), exponential, v-prediction trailing, leading.
cases.append(trajectory("dpm2 sd15 5", "dpm2", KDPM2DiscreteScheduler, SD15, 5))
cases.append(trajectory("dpm2 karras 6", "dpm2", KDPM2DiscreteScheduler, dict(SD15, use_karras_sigmas=True), 6))
cases.append(trajectory("dpm2 exponential 4", "dpm2", KDPM2DiscreteScheduler, EXP, 4))
cases.append(trajectory("dpm2 v-pred trailing 4", "dpm2", KDPM2DiscreteScheduler,
                        dict(SD21, timestep_spacing="trailing"), 4))
cases.append(trajectory("dpm2 leading 3", "dpm2", KDPM2DiscreteScheduler, dict(SD15, timestep_spacing="leading"), 3))
# DPM2 ancestral: noise after every second-order update.
cases.append(trajectory("dpm2-a sd15 5", "dpm2-a", KDPM2AncestralDiscreteScheduler, SD15, 5, seed=18))
cases.append(trajectory("dpm2-a karras 6", "dpm2-a", KDPM2AncestralDiscreteScheduler,
                        dict(SD15, use_karras_sigmas=True), 6, seed=19))
cases.append(trajectory("dpm2-a v-pred trailing 4", "dpm2-a", KDPM2AncestralDiscreteScheduler,
                        dict(SD21, timestep_spacing="trailing"), 4, seed=20))
# Beta sigmas (use_beta_sigmas: Beta(0.6, 0.6) quantiles, scipy's beta.ppf) where diffusers has
# them.
BETA = dict(SD15, use_beta_sigmas=True)
cases.append(trajectory("euler beta 6", "euler", EulerDiscreteScheduler, BETA, 6))
cases.append(trajectory("heun beta 4", "heun", HeunDiscreteScheduler, BETA, 4))
cases.append(trajectory("lms beta 5", "lms", LMSDiscreteScheduler, BETA, 5))
cases.append(trajectory("dpm++2m beta 7", "dpm++2m", DPMSolverMultistepScheduler, BETA, 7))
cases.append(trajectory("dpm2 beta 4", "dpm2", KDPM2DiscreteScheduler, BETA, 4))
cases.append(trajectory("dpm2-a beta v-pred 4", "dpm2-a", KDPM2AncestralDiscreteScheduler,
                        dict(SD21, use_beta_sigmas=True), 4, seed=21))
cases.append(trajectory("dpm++2m-sde beta 5", "dpm++2m-sde", DPMSolverMultistepScheduler,
                        dict(BETA, **SDE), 5, seed=22))
# DEIS (log-ρ, order 2; its σ list ends at σ_min): SD 1.5's config, 16 steps (from 15 on the
# last step stays second order), Karras (timesteps rounded even for cosine betas), v-prediction
# trailing, beta σ, leading spacing, an image-to-image start part-way.
cases.append(trajectory("deis sd15 6", "deis", DEISMultistepScheduler, SD15, 6))
cases.append(trajectory("deis sd15 16", "deis", DEISMultistepScheduler, SD15, 16))
cases.append(trajectory("deis karras 8", "deis", DEISMultistepScheduler, dict(SD15, use_karras_sigmas=True), 8))
cases.append(trajectory("deis cosine karras 5", "deis", DEISMultistepScheduler,
                        dict(SD15, beta_schedule="squaredcos_cap_v2", use_karras_sigmas=True), 5, f64=True))
cases.append(trajectory("deis v-pred trailing 5", "deis", DEISMultistepScheduler,
                        dict(SD21, timestep_spacing="trailing"), 5))
cases.append(trajectory("deis beta 5", "deis", DEISMultistepScheduler, BETA, 5))
cases.append(trajectory("deis leading begin 3 of 8", "deis", DEISMultistepScheduler,
                        dict(SD15, timestep_spacing="leading"), 8, begin=3))
# UniPC (bh2, order 2, predictor-corrector): the same configs, the sample predicted x0, and a
# sample changed between steps (an inpainting blend), which the corrector does not read.
cases.append(trajectory("unipc sd15 6", "unipc", UniPCMultistepScheduler, SD15, 6))
cases.append(trajectory("unipc sd15 20", "unipc", UniPCMultistepScheduler, SD15, 20))
cases.append(trajectory("unipc karras 8", "unipc", UniPCMultistepScheduler, dict(SD15, use_karras_sigmas=True), 8))
cases.append(trajectory("unipc cosine karras 5", "unipc", UniPCMultistepScheduler,
                        dict(SD15, beta_schedule="squaredcos_cap_v2", use_karras_sigmas=True), 5, f64=True))
cases.append(trajectory("unipc v-pred trailing 5", "unipc", UniPCMultistepScheduler,
                        dict(SD21, timestep_spacing="trailing"), 5))
cases.append(trajectory("unipc sample 5", "unipc", UniPCMultistepScheduler, dict(SD15, prediction_type="sample"), 5))
cases.append(trajectory("unipc exponential 6", "unipc", UniPCMultistepScheduler, EXP, 6))
cases.append(trajectory("unipc begin 4 of 10", "unipc", UniPCMultistepScheduler, SD15, 10, begin=4))
cases.append(trajectory("unipc blended 6", "unipc", UniPCMultistepScheduler, SD15, 6, blended=True))
cases.append(trajectory("dpm++2m blended 6", "dpm++2m", DPMSolverMultistepScheduler, SD15, 6, blended=True))
# DPM++ SDE (second order through the log-midpoint, noise from the Brownian tree): SD 1.5's
# config, Karras, v-prediction trailing, beta σ, leading spacing, a run begun part-way.
cases.append(trajectory("dpm++sde sd15 5", "dpm++sde", DPMSolverSDEScheduler, SD15, 5, seed=23))
cases.append(trajectory("dpm++sde karras 6", "dpm++sde", DPMSolverSDEScheduler, dict(SD15, use_karras_sigmas=True), 6,
                        seed=24))
cases.append(trajectory("dpm++sde v-pred trailing 4", "dpm++sde", DPMSolverSDEScheduler,
                        dict(SD21, timestep_spacing="trailing"), 4, seed=25))
cases.append(trajectory("dpm++sde beta 4", "dpm++sde", DPMSolverSDEScheduler, BETA, 4, seed=26))
cases.append(trajectory("dpm++sde leading 3", "dpm++sde", DPMSolverSDEScheduler,
                        dict(SD15, timestep_spacing="leading"), 3, seed=27))
cases.append(trajectory("dpm++sde begin 4 of 5", "dpm++sde", DPMSolverSDEScheduler, SD15, 5, seed=28, begin=4))

with open("tests/fixtures/schedulers.json", "w") as f:
    json.dump({"diffusers": diffusers.__version__, "torch": torch.__version__, "cases": cases}, f, indent=1,
              allow_nan=False)
print(f"{len(cases)} cases written with diffusers {diffusers.__version__}")
