//! Samplers against diffusers 0.42: schedules (timesteps, sigmas, ᾱ, init_noise_sigma,
//! model-input scales) and whole trajectories, replaying the model outputs and the noise that
//! diffusers used (`tests/fixtures/schedulers.json`, made by
//! `tools/dump_scheduler_fixtures.py`). CPU only.

use sd_wgpu::schedulers::{HostOps, Sampler, SamplerKind, ScheduleConfig};
use serde_json::Value;

fn fixtures() -> Vec<Value> {
    let text = include_str!("fixtures/schedulers.json");
    let v: Value = serde_json::from_str(text).expect("fixture JSON");
    v["cases"].as_array().expect("cases").clone()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    floats(v).into_iter().map(|x| x as f32).collect()
}

/// `|a − b| ≤ atol + rtol·|b|` for each element; the message names the worst one.
fn close(what: &str, got: &[f64], want: &[f64], atol: f64, rtol: f64) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} values, expected {} ({got:?} vs {want:?})",
            got.len(),
            want.len()
        ));
    }
    let worst = got
        .iter()
        .zip(want)
        .enumerate()
        .map(|(i, (g, w))| (i, (g - w).abs() / (atol + rtol * w.abs())))
        .fold(
            (0, 0.0),
            |a, b| if b.1 > a.1 || b.1.is_nan() { b } else { a },
        );
    if worst.1 > 1.0 || worst.1.is_nan() {
        let i = worst.0;
        return Err(format!(
            "{what}: element {i}: {} vs diffusers {} ({:.2}× the tolerance)",
            got[i], want[i], worst.1
        ));
    }
    Ok(())
}

fn kind_of(case: &Value) -> SamplerKind {
    let mut k = SamplerKind::parse(case["sampler"].as_str().unwrap()).unwrap();
    if let (SamplerKind::Ddim { eta }, Some(e)) = (&mut k, case["eta"].as_f64()) {
        *eta = e;
    }
    k
}

fn check_case(case: &Value) -> Result<(), String> {
    let name = case["name"].as_str().unwrap();
    let cfg = ScheduleConfig::from_value(&case["config"]).map_err(|e| format!("{name}: {e}"))?;
    let steps = case["steps"].as_u64().unwrap() as usize;
    let mut s =
        Sampler::<Vec<f32>>::new(kind_of(case), &cfg, steps).map_err(|e| format!("{name}: {e}"))?;

    let ac = cfg.alphas_cumprod();
    for (t, v) in case["alphas_cumprod"].as_object().unwrap() {
        close(
            &format!("{name}: alphas_cumprod[{t}]"),
            &[ac[t.parse::<usize>().unwrap()]],
            &[v.as_f64().unwrap()],
            0.0,
            1e-7,
        )?;
    }
    close(
        &format!("{name}: timesteps"),
        s.timesteps(),
        &floats(&case["timesteps"]),
        1e-3,
        1e-6,
    )?;
    if !case["sigmas"].is_null() {
        close(
            &format!("{name}: sigmas"),
            s.sigmas(),
            &floats(&case["sigmas"]),
            1e-6,
            1e-6,
        )?;
    }
    close(
        &format!("{name}: init_noise_sigma"),
        &[s.init_noise_sigma()],
        &[case["init_noise_sigma"].as_f64().unwrap()],
        0.0,
        1e-6,
    )?;
    // Image-to-image: the run begins part-way (diffusers' `set_begin_index`).
    let begin = case["begin"].as_u64().unwrap_or(0) as usize;
    s.begin_at(begin).map_err(|e| format!("{name}: {e}"))?;
    let scales: Vec<f64> = (begin..begin + steps_taken(case))
        .map(|i| s.input_scale(i))
        .collect();
    close(
        &format!("{name}: input scales"),
        &scales,
        &floats(&case["input_scales"]),
        0.0,
        1e-5,
    )?;

    // DPM++ SDE: the noise is the Brownian tree's, rebuilt from the seed and checked against
    // the increments diffusers drew (torchsde) before it is used.
    let mut tree = match case["brownian_seed"].as_u64() {
        Some(seed) => s
            .brownian_tree(8, seed)
            .map_err(|e| format!("{name}: {e}"))?,
        None => None,
    };
    let xs = case["x"].as_array().unwrap();
    let ms = case["model_outputs"].as_array().unwrap();
    let noises = case["noise"].as_array().unwrap();
    let mut x = f32s(&xs[0]);
    let mut worst = 0.0f64;
    for k in 0..ms.len() {
        if case["blended"].as_bool() == Some(true) && k > 0 {
            // The dump's `blend`: the sample changed between steps, as inpainting does.
            x = x
                .iter()
                .enumerate()
                .map(|(e, v)| 0.8 * v + 0.1 * ((e + k + begin) as f32).cos())
                .collect();
        }
        let m = f32s(&ms[k]);
        let mut noise = (!noises[k].is_null()).then(|| f32s(&noises[k]));
        if let (Some(tree), Some(recorded)) = (tree.as_mut(), noise.as_ref()) {
            let (a, b) = s
                .brownian_interval(begin + k)
                .ok_or_else(|| format!("{name}: step {k} has no Brownian interval"))?;
            let z = tree.noise(a, b).map_err(|e| format!("{name}: {e}"))?;
            let (z64, r64): (Vec<f64>, Vec<f64>) = z
                .iter()
                .zip(recorded)
                .map(|(&g, &w)| (f64::from(g), f64::from(w)))
                .unzip();
            close(
                &format!("{name}: tree noise of step {k}"),
                &z64,
                &r64,
                1e-6,
                1e-6,
            )?;
            noise = Some(z);
        }
        let i = begin + k;
        if s.needs_noise(i) != noise.is_some() {
            return Err(format!(
                "{name}: step {i}: needs_noise = {} but diffusers drew {}",
                s.needs_noise(i),
                noise.is_some()
            ));
        }
        x = s
            .step(&mut HostOps, i, &x, &m, noise.as_ref())
            .map_err(|e| format!("{name}: step {k}: {e}"))?;
        let got: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let want = floats(&xs[k + 1]);
        close(
            &format!("{name}: sample after step {k}"),
            &got,
            &want,
            1e-4,
            1e-4,
        )?;
        worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(worst, f64::max);
    }
    eprintln!(
        "ok {name}: {} steps, max |x - diffusers| = {worst:.2e}",
        ms.len()
    );
    Ok(())
}

fn steps_taken(case: &Value) -> usize {
    case["model_outputs"].as_array().unwrap().len()
}

#[test]
fn samplers_match_diffusers() {
    let cases = fixtures();
    assert!(cases.len() >= 20, "fixture has {} cases", cases.len());
    let failures: Vec<String> = cases.iter().filter_map(|c| check_case(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from diffusers:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_sampler_name_parses_and_unknown_names_list_the_known_ones() {
    for name in [
        "ddim",
        "ddpm",
        "pndm",
        "euler",
        "euler-a",
        "dpm++2m",
        "dpm++2m-karras",
        "lcm",
        "heun",
        "dpm2",
        "DPM2",
        "dpm2-a",
        "DPM2 a",
    ] {
        SamplerKind::parse(name).unwrap();
    }
    // The web UI's names, any case; each kind's name parses back to it.
    assert_eq!(
        SamplerKind::parse("DPM++ 2M Karras").unwrap(),
        SamplerKind::DpmPP2M { karras: true }
    );
    assert_eq!(
        SamplerKind::parse("euler A").unwrap(),
        SamplerKind::EulerAncestral
    );
    assert_eq!(SamplerKind::parse("PLMS").unwrap(), SamplerKind::Pndm);
    for k in SamplerKind::ALL {
        assert_eq!(
            SamplerKind::parse(sd_wgpu::infotext::sampler_name(k)).unwrap(),
            k
        );
    }
    // The web UI's "<sampler> Karras" names where Karras is a separate σ schedule.
    use sd_wgpu::schedulers::SigmaSchedule;
    for (name, kind) in [
        ("LMS Karras", SamplerKind::Lms),
        ("DPM2 a Karras", SamplerKind::Dpm2Ancestral),
        ("heun-karras", SamplerKind::Heun),
    ] {
        let got = SamplerKind::parse_with_schedule(name).unwrap();
        assert_eq!(got, (kind, Some(SigmaSchedule::Karras)), "{name}");
    }
    let plain = SamplerKind::parse_with_schedule("DPM++ 2M Karras").unwrap();
    assert_eq!(plain, (SamplerKind::DpmPP2M { karras: true }, None));
    assert!(SamplerKind::parse_with_schedule("Euler a Karras").is_err());
    let e = SamplerKind::parse("rk45").unwrap_err().to_string();
    assert!(
        e.contains("rk45") && e.contains("dpm++2m-karras") && e.contains("heun"),
        "{e}"
    );
}

#[test]
fn bad_configs_are_refused_with_the_key_named() {
    let e = ScheduleConfig::from_json(r#"{"beta_schedule": "cosine"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("beta_schedule") && e.contains("cosine"), "{e}");
    let e = ScheduleConfig::from_json(r#"{"trained_betas": [0.1, 0.2]}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("trained_betas"), "{e}");
    assert!(ScheduleConfig::from_json("{not json").is_err());
    let cfg = ScheduleConfig::sd15();
    assert!(Sampler::<Vec<f32>>::new(SamplerKind::Ddim { eta: 0.0 }, &cfg, 0).is_err());
    assert!(Sampler::<Vec<f32>>::new(SamplerKind::Ddim { eta: 1.5 }, &cfg, 10).is_err());
    // A real SD 1.5 scheduler_config.json reads as the built-in SD 1.5 config.
    let sd15 = r#"{"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
        "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null,
        "clip_sample": false}"#;
    assert_eq!(
        ScheduleConfig::from_json(sd15).unwrap(),
        ScheduleConfig::sd15()
    );
}

/// A leading schedule that `steps_offset` pushes past the training range is an error naming
/// the timestep (diffusers fails there with an index error); other spacings add no offset.
#[test]
fn steps_offset_past_the_training_range_is_refused() {
    let cfg =
        ScheduleConfig::from_json(r#"{"steps_offset": 999, "num_train_timesteps": 1000}"#).unwrap();
    for kind in [
        SamplerKind::Ddim { eta: 0.0 },
        SamplerKind::Pndm,
        SamplerKind::Ddpm,
    ] {
        let e = Sampler::<()>::new(kind, &cfg, 2).err().unwrap().to_string();
        assert!(e.contains("reach timestep 1499"), "{kind:?}: {e}");
        assert!(Sampler::<()>::new(kind, &cfg, 1).is_ok(), "{kind:?}");
    }
    // Euler and DPM++ default to linspace: no offset, no error.
    assert!(Sampler::<()>::new(SamplerKind::Euler, &cfg, 2).is_ok());
    let e = ScheduleConfig::from_json(r#"{"steps_offset": 1000}"#).unwrap_err();
    assert!(e.to_string().contains("`steps_offset` = 1000"), "{e}");
}

/// Scheduler options that change the math and are not implemented are refused with the key
/// named (never silently ignored); their off values and defaults read fine.
#[test]
fn unimplemented_scheduler_options_are_refused() {
    for (json, key) in [
        (r#"{"thresholding": true}"#, "thresholding"),
        (
            r#"{"rescale_betas_zero_snr": true}"#,
            "rescale_betas_zero_snr",
        ),
        (r#"{"use_lu_lambdas": true}"#, "use_lu_lambdas"),
        (r#"{"use_flow_sigmas": true}"#, "use_flow_sigmas"),
        (
            r#"{"use_beta_sigmas": true, "use_karras_sigmas": true}"#,
            "only one of",
        ),
        (
            r#"{"interpolation_type": "log_linear"}"#,
            "interpolation_type",
        ),
        (r#"{"timestep_type": "continuous"}"#, "timestep_type"),
        (r#"{"final_sigmas_type": "sigma_min"}"#, "final_sigmas_type"),
        (
            r#"{"original_inference_steps": 0}"#,
            "original_inference_steps",
        ),
        (
            r#"{"original_inference_steps": 1001}"#,
            "original_inference_steps",
        ),
        (r#"{"timestep_scaling": -1}"#, "timestep_scaling"),
    ] {
        let e = ScheduleConfig::from_json(json).unwrap_err().to_string();
        assert!(e.contains(key), "{json}: {e}");
    }
    let fine = r#"{"thresholding": false, "rescale_betas_zero_snr": false,
        "interpolation_type": "linear", "timestep_type": "discrete", "final_sigmas_type": "zero"}"#;
    ScheduleConfig::from_json(fine).unwrap();
}

/// PNDM runs PLMS (`skip_prk_steps`); a PNDMScheduler config without the key (diffusers'
/// default there: Runge–Kutta warm-up steps) or with it false is refused, with the key named.
#[test]
fn pndm_without_skip_prk_steps_is_refused() {
    for json in [
        r#"{"_class_name": "PNDMScheduler"}"#,
        r#"{"_class_name": "DDIMScheduler", "skip_prk_steps": false}"#,
    ] {
        let cfg = ScheduleConfig::from_json(json).unwrap();
        let e = Sampler::<()>::new(SamplerKind::Pndm, &cfg, 10)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("skip_prk_steps"), "{json}: {e}");
        // Other samplers do not read it.
        Sampler::<()>::new(SamplerKind::Euler, &cfg, 10).unwrap();
    }
    let ddim = ScheduleConfig::from_json(r#"{"_class_name": "DDIMScheduler"}"#).unwrap();
    Sampler::<()>::new(SamplerKind::Pndm, &ddim, 10).unwrap();
}

/// LCM: an `LCMScheduler` config without betas takes LCMScheduler's defaults (SD's scaled
/// linear 0.00085–0.012, as diffusers' per-class defaults), others keep the common ones; a
/// run longer than the distillation schedule is refused, as diffusers does.
#[test]
fn lcm_defaults_and_limits() {
    let lcm = ScheduleConfig::from_json(r#"{"_class_name": "LCMScheduler"}"#).unwrap();
    assert_eq!(
        (lcm.beta_start, lcm.beta_end, lcm.beta_schedule),
        (
            0.00085,
            0.012,
            sd_wgpu::schedulers::BetaSchedule::ScaledLinear
        )
    );
    assert_eq!(
        (lcm.original_inference_steps, lcm.timestep_scaling),
        (50, 10.0)
    );
    let ddim = ScheduleConfig::from_json(r#"{"_class_name": "DDIMScheduler"}"#).unwrap();
    assert_eq!((ddim.beta_start, ddim.beta_end), (0.0001, 0.02));
    // diffusers: 4 steps of the 50-step distillation schedule 999, 979, … are 999, 759, 499, 259.
    let s = Sampler::<()>::new(SamplerKind::Lcm, &lcm, 4).unwrap();
    assert_eq!(s.timesteps(), &[999.0, 759.0, 499.0, 259.0]);
    assert!((0..3).all(|i| s.needs_noise(i)) && !s.needs_noise(3));
    let e = Sampler::<()>::new(SamplerKind::Lcm, &lcm, 51)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("original_inference_steps = 50"), "{e}");
    // steps_offset does not move LCM's timesteps (its schedule ignores the spacing).
    let off = ScheduleConfig::from_json(r#"{"_class_name": "LCMScheduler", "steps_offset": 999}"#)
        .unwrap();
    let s = Sampler::<()>::new(SamplerKind::Lcm, &off, 50).unwrap();
    assert_eq!(s.timesteps()[49], 19.0);
}

/// Heun is second order: 2n − 1 model calls for n steps, and image-to-image starts at
/// `t_start · 2` (strength 0.6 of 4 steps: index 4, a first-order step), as diffusers'
/// `get_timesteps` does.
#[test]
fn heun_runs_two_calls_per_step_and_img2img_honours_its_order() {
    let s = Sampler::<()>::new(SamplerKind::Heun, &ScheduleConfig::sd15(), 4).unwrap();
    assert_eq!((s.order(), s.timesteps().len()), (2, 7));
    assert_eq!(s.start_index(0.6), 4);
    assert_eq!(s.timesteps()[3], s.timesteps()[4]);
}
