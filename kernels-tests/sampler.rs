use crate::common::*;
use sd_wgpu::ops::SamplerStep;
use sd_wgpu::{DType, Recorder, ops, reference};

#[test]
fn sampler_step_matches_reference() {
    let gpu = gpu();
    let shape = [2, 64, 64, 4];
    let n: usize = shape.iter().product();
    let mut rng = Rng::new(77);
    let x = rng.normals(n, 1.0);
    let eps2 = rng.normals(2 * n, 1.0);
    let noise = rng.normals(n, 1.0);
    let hist = rng.normals(n, 1.0);
    let xt = upload(&x, &shape, DType::F32, "latents");
    let e2t = upload(&eps2, &[4, 64, 64, 4], DType::F32, "noise_pred");
    let e1t = upload(&eps2[..n], &shape, DType::F32, "noise_pred");
    let nt = upload(&noise, &shape, DType::F32, "noise");
    let ht = upload(&hist, &shape, DType::F32, "hist");
    // DDIM-like, Euler-ancestral-like (noise), multistep (hist), no guidance.
    let cases = [
        (
            "ddim cfg 7.5",
            Some(7.5f32),
            [0.99f32, -0.05, 0.0, 0.0],
            false,
            false,
        ),
        (
            "ancestral cfg 5 + noise",
            Some(5.0),
            [1.0, -0.3, 0.2, 0.0],
            true,
            false,
        ),
        (
            "multistep cfg 7.5 + hist",
            Some(7.5),
            [0.9, -0.1, 0.0, 0.4],
            false,
            true,
        ),
        (
            "no guidance, everything",
            None,
            [1.1, 0.2, 0.3, -0.4],
            true,
            true,
        ),
    ];
    for (name, g, [a, b, c, d], with_noise, with_hist) in cases {
        let eps_t = if g.is_some() { &e2t } else { &e1t };
        let eps_h = if g.is_some() { &eps2[..] } else { &eps2[..n] };
        let mut rec = Recorder::new(gpu);
        let step = SamplerStep {
            guidance: g,
            a,
            b,
            c: if with_noise { c } else { 0.0 },
            d: if with_hist { d } else { 0.0 },
        };
        let (y, e) = ops::sampler_step(
            &mut rec,
            &xt,
            eps_t,
            with_noise.then_some(&nt),
            with_hist.then_some(&ht),
            step,
            true,
        )
        .unwrap();
        rec.submit().unwrap();
        let (want_y, want_e) = reference::sampler_step(
            &x,
            eps_h,
            with_noise.then_some(&noise[..]),
            with_hist.then_some(&hist[..]),
            g,
            [a, b, step.c, step.d],
        );
        check(
            &format!("sampler_step {name} x'"),
            &y.to_vec(gpu).unwrap(),
            &want_y,
            1e-5,
            1e-5,
        );
        check(
            &format!("sampler_step {name} eps"),
            &e.unwrap().to_vec(gpu).unwrap(),
            &want_e,
            1e-5,
            1e-5,
        );
    }
    let mut rec = Recorder::new(gpu);
    let bad = SamplerStep {
        guidance: Some(7.5),
        a: 1.0,
        b: 1.0,
        c: 0.0,
        d: 0.0,
    };
    let e = ops::sampler_step(&mut rec, &xt, &e1t, None, None, bad, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("noise_pred"), "{e}");
    let bad = SamplerStep {
        guidance: None,
        a: 1.0,
        b: 1.0,
        c: 0.5,
        d: 0.0,
    };
    assert!(ops::sampler_step(&mut rec, &xt, &e1t, None, None, bad, false).is_err());
}

#[test]
fn lincomb_and_clamp_match_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(8);
    let n = 1000;
    let vs: Vec<Vec<f32>> = (0..7).map(|_| rng.normals(n, 1.0)).collect();
    let ts: Vec<_> = vs
        .iter()
        .map(|v| upload(v, &[10, 100], DType::F32, "term"))
        .collect();
    // 1, 2, 4 (one dispatch) and 7 terms (chained).
    for k in [1, 2, 4, 7] {
        let coefs: Vec<f32> = (0..k).map(|i| 0.5 - 0.3 * i as f32).collect();
        let terms: Vec<(f32, &sd_wgpu::Tensor)> = coefs.iter().copied().zip(&ts).collect();
        let mut rec = Recorder::new(gpu);
        let y = ops::lincomb(&mut rec, &terms).unwrap();
        let want: Vec<f32> = (0..n)
            .map(|i| {
                (0..k)
                    .map(|j| f64::from(coefs[j]) * f64::from(vs[j][i]))
                    .sum::<f64>() as f32
            })
            .collect();
        check(&format!("lincomb of {k}"), &run(rec, &y), &want, 1e-6, 1e-6);
    }
    let mut rec = Recorder::new(gpu);
    let y = ops::clamp(&mut rec, &ts[0], -0.5, 0.75).unwrap();
    check(
        "clamp",
        &run(rec, &y),
        &vs[0]
            .iter()
            .map(|v| v.clamp(-0.5, 0.75))
            .collect::<Vec<_>>(),
        0.0,
        0.0,
    );
    let mut rec = Recorder::new(gpu);
    assert!(ops::clamp(&mut rec, &ts[0], 1.0, -1.0).is_err());
    let short = upload(&[1.0; 3], &[3], DType::F32, "short");
    assert!(
        ops::lincomb(&mut rec, &[(1.0, &ts[0]), (1.0, &short)])
            .unwrap_err()
            .to_string()
            .contains("short")
    );
}

/// Every diffusers trajectory of `tests/fixtures/schedulers.json`, run by the same sampler
/// code on GPU tensors (`GpuOps`) instead of host vectors.
#[test]
fn samplers_on_gpu_match_diffusers() {
    use sd_wgpu::schedulers::{GpuOps, Sampler, SamplerKind, ScheduleConfig};
    let gpu = gpu();
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../tests/fixtures/schedulers.json")).unwrap();
    let vec = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let cfg = ScheduleConfig::from_value(&case["config"]).unwrap();
        let mut kind = SamplerKind::parse(case["sampler"].as_str().unwrap()).unwrap();
        if let (SamplerKind::Ddim { eta }, Some(e)) = (&mut kind, case["eta"].as_f64()) {
            *eta = e;
        }
        let steps = case["steps"].as_u64().unwrap() as usize;
        let mut sampler = Sampler::<sd_wgpu::Tensor>::new(kind, &cfg, steps).unwrap();
        let xs = case["x"].as_array().unwrap();
        let (ms, noises) = (
            case["model_outputs"].as_array().unwrap(),
            case["noise"].as_array().unwrap(),
        );
        let begin = case["begin"].as_u64().unwrap_or(0) as usize;
        sampler.begin_at(begin).unwrap();
        let blended = case["blended"].as_bool() == Some(true);
        let mut host = vec(&xs[0]);
        let mut x = upload(&host, &[1, 8], DType::F32, "latents");
        for k in 0..ms.len() {
            if blended && k > 0 {
                // The dump's inpainting-like change of the sample between steps.
                for (e, v) in host.iter_mut().enumerate() {
                    *v = 0.8 * *v + 0.1 * ((e + k + begin) as f32).cos();
                }
                x = upload(&host, &[1, 8], DType::F32, "latents");
            }
            let m = upload(&vec(&ms[k]), &[1, 8], DType::F32, "noise_pred");
            let z = (!noises[k].is_null())
                .then(|| upload(&vec(&noises[k]), &[1, 8], DType::F32, "noise"));
            let mut rec = Recorder::new(gpu);
            x = sampler
                .step(&mut GpuOps { rec: &mut rec }, begin + k, &x, &m, z.as_ref())
                .unwrap();
            let got = run(rec, &x);
            host.clone_from(&got);
            check(
                &format!("gpu sampler {name} step {k}"),
                &got,
                &vec(&xs[k + 1]),
                1e-4,
                1e-4,
            );
        }
    }
}

/// Heun, DPM2 (plain and ancestral), LMS, UniPC and DEIS through the whole pipeline (their
/// programs recorded into the step plan: Heun's saved sample and derivative, DPM2's saved
/// sample, LMS's shifted history, UniPC's corrected sample) against
/// diffusers' `StableDiffusionPipeline` / `StableDiffusionImg2ImgPipeline` on the tiny SD 1
/// model (`tools/make_sampler_pipeline_fixture.py`, seed 42): text-to-image, and
/// image-to-image at strength 0.6, where Heun and DPM2 start at index 4 and LMS's first step
/// takes order 4, and UniPC in 4-channel inpainting (its corrector ignores the blend).
#[test]
fn added_samplers_pipelines_match_diffusers() {
    use crate::pipeline::{fixtures, sd1_tiny, sneaker};
    use sd_wgpu::pipeline::{InitImage, Request};
    use sd_wgpu::schedulers::SamplerKind;
    let gpu = gpu();
    let pipe = sd1_tiny(gpu);
    let g = sd_wgpu::weights::Weights::open_file(&fixtures().join("sampler-golden.safetensors"))
        .unwrap();
    let (_, _, rgb) =
        sd_wgpu::imageio::read_image_rgb(&fixtures().join("img2img-input.png")).unwrap();
    let (_, _, m) = sd_wgpu::imageio::read_image_rgb(&fixtures().join("inpaint-mask.png")).unwrap();
    let mask: Vec<f32> = m.chunks_exact(3).map(|p| p[0]).collect();
    for (name, kind, steps, strength, calls) in [
        ("heun4", SamplerKind::Heun, 4, None, 7),
        ("lms5", SamplerKind::Lms, 5, None, 5),
        ("heun_img06", SamplerKind::Heun, 4, Some(0.6), 3),
        ("lms_img06", SamplerKind::Lms, 5, Some(0.6), 3),
        ("dpm2_4", SamplerKind::Dpm2, 4, None, 7),
        ("dpm2_img06", SamplerKind::Dpm2, 4, Some(0.6), 3),
        ("dpm2a_4", SamplerKind::Dpm2Ancestral, 4, None, 7),
        ("dpm2a_img06", SamplerKind::Dpm2Ancestral, 4, Some(0.6), 3),
        ("unipc5", SamplerKind::UniPc, 5, None, 5),
        ("unipc_img06", SamplerKind::UniPc, 5, Some(0.6), 3),
        ("deis5", SamplerKind::Deis, 5, None, 5),
        ("deis_img06", SamplerKind::Deis, 5, Some(0.6), 3),
        ("unipc_inpaint", SamplerKind::UniPc, 5, Some(1.0), 5),
        ("dpmsde4", SamplerKind::DpmSde, 4, None, 7),
        ("dpmsde_img06", SamplerKind::DpmSde, 4, Some(0.6), 3),
    ] {
        // 4-channel inpainting: the known region blended back after every step.
        let mask = name.ends_with("inpaint").then(|| mask.clone());
        let req = Request {
            sampler: Some(kind),
            seed: 42,
            init_image: strength.map(|s| InitImage {
                mask,
                ..InitImage::new(rgb.clone(), s)
            }),
            ..sneaker(steps)
        };
        let mut seen = 0;
        let out = pipe
            .generate(gpu, &req, &mut |p| {
                seen = p.steps;
                true
            })
            .unwrap();
        assert_eq!(seen, calls, "{name}: U-Net calls");
        let want = g
            .read_f32(&format!("image_{name}"), &[1, 32, 32, 3])
            .unwrap();
        let p = psnr(&out.image, &want);
        eprintln!("{name}: {p:.1} dB against diffusers");
        assert!(p >= 40.0, "{name}: {p} dB");
    }
}

/// `Request::sigma_schedule` (`--schedule`) reaches the samplers that have one (another image
/// than the plain schedule's) and is refused, naming the sampler, where diffusers has none.
#[test]
fn sigma_schedule_is_applied_or_refused() {
    use crate::pipeline::{sd1_tiny, sneaker};
    use sd_wgpu::pipeline::Request;
    use sd_wgpu::schedulers::{SamplerKind, SigmaSchedule};
    let gpu = gpu();
    let pipe = sd1_tiny(gpu);
    let run = |s| {
        let req = Request {
            sampler: Some(SamplerKind::Euler),
            sigma_schedule: Some(s),
            seed: 1,
            ..sneaker(3)
        };
        pipe.generate(gpu, &req, &mut |_| true).unwrap().latents
    };
    let (plain, exp) = (run(SigmaSchedule::Plain), run(SigmaSchedule::Exponential));
    assert!(plain.iter().zip(&exp).any(|(a, b)| (a - b).abs() > 1e-3));
    let beta = run(SigmaSchedule::Beta);
    assert!(beta.iter().zip(&exp).any(|(a, b)| (a - b).abs() > 1e-3));
    let ddim = Request {
        sampler: Some(SamplerKind::Ddim { eta: 0.0 }),
        sigma_schedule: Some(SigmaSchedule::Karras),
        ..sneaker(3)
    };
    let e = pipe.generate(gpu, &ddim, &mut |_| true).err().unwrap();
    assert!(
        e.to_string().contains("sigma_schedule") && e.to_string().contains("Ddim"),
        "{e}"
    );
    assert_eq!(
        SigmaSchedule::parse("exponential").unwrap(),
        SigmaSchedule::Exponential
    );
    assert_eq!(SigmaSchedule::parse("beta").unwrap(), SigmaSchedule::Beta);
    assert!(SigmaSchedule::parse("cosine").is_err());
}
