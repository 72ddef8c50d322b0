//! Few-step sampling against diffusers' StableDiffusionPipeline on the tiny SD 1-like model
//! (`tools/make_fewstep_fixture.py`): an LCM-distilled U-Net (`time_cond_proj_dim`: the
//! guidance scale as an embedding, one pass, LCMScheduler with its noise between steps), the
//! LCM sampler on an ordinary U-Net with classifier-free guidance (LCM-LoRA's way), and
//! SD-Turbo's Euler / Euler-ancestral with trailing spacing at guidance 0 (no unconditional
//! pass), 1 and 2 steps.

use crate::common::*;
use crate::pipeline::fixtures;
use sd_wgpu::models::unet::UNetConfig;
use sd_wgpu::pipeline::{Pipeline, Request};
use sd_wgpu::schedulers::{SamplerKind, ScheduleConfig, Spacing};
use sd_wgpu::weights::{WeightDType, Weights};

fn request(steps: usize, guidance: f32, sampler: SamplerKind) -> Request {
    Request {
        prompt: "a red sneaker on a white table".into(),
        negative_prompt: "blurry".into(),
        steps,
        guidance,
        sampler: Some(sampler),
        width: 32,
        height: 32,
        seed: 42,
        ..Request::default()
    }
}

fn golden() -> Weights {
    Weights::open_file(&fixtures().join("fewstep-golden.safetensors")).unwrap()
}

#[test]
fn turbo_and_lcm_cfg_match_diffusers() {
    let gpu = gpu();
    let pipe = Pipeline::load(gpu, &fixtures().join("sd1-tiny"), WeightDType::Auto).unwrap();
    let g = golden();
    let trailing = |steps, kind| Request {
        spacing: Some(Spacing::Trailing),
        ..request(steps, 0.0, kind)
    };
    // Guidance 0 and 1 run one pass: the unconditional row is never encoded.
    assert!(!pipe.guided(&trailing(1, SamplerKind::Euler)));
    check_golden(&pipe, &g, "turbo1", &trailing(1, SamplerKind::Euler));
    check_golden(&pipe, &g, "turbo2", &trailing(2, SamplerKind::Euler));
    check_golden(
        &pipe,
        &g,
        "turbo_a2",
        &trailing(2, SamplerKind::EulerAncestral),
    );
    // The LCM sampler on an ordinary U-Net: classifier-free guidance as usual.
    let lcm_cfg = request(3, 1.5, SamplerKind::Lcm);
    assert!(pipe.guided(&lcm_cfg));
    check_golden(&pipe, &g, "lcm_cfg", &lcm_cfg);
}

#[test]
fn lcm_unet_matches_diffusers() {
    let gpu = gpu();
    let mut pipe = Pipeline::load(gpu, &fixtures().join("sd1-tiny"), WeightDType::Auto).unwrap();
    let dir = fixtures().join("lcm-unet");
    let cfg = UNetConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(cfg.time_cond_proj_dim, Some(16));
    let w = Weights::open_file(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    pipe.replace_unet(gpu, w, &cfg, WeightDType::Auto).unwrap();
    // LCM_Dreamshaper_v7's scheduler config (set_alpha_to_one, steps_offset 1).
    let text = std::fs::read_to_string(fixtures().join("lcm-scheduler.json")).unwrap();
    pipe.scheduler = ScheduleConfig::from_json(&text).unwrap();
    let g = golden();
    let lcm4 = request(4, 8.0, SamplerKind::Lcm);
    // The scale is the U-Net's embedding: one pass, no unconditional batch.
    assert!(!pipe.guided(&lcm4));
    check_golden(&pipe, &g, "lcm4", &lcm4);
    check_golden(&pipe, &g, "lcm1", &request(1, 2.0, SamplerKind::Lcm));
    // The embedding matters: another scale gives another image.
    let other = pipe
        .generate(gpu, &request(1, 4.0, SamplerKind::Lcm), &mut |_| true)
        .unwrap();
    let lcm1 = g.read_f32("final_lcm1", &[1, 4, 8, 8]).unwrap();
    assert!(rel_l2(&other.latents, &lcm1) > 1e-2);
}
