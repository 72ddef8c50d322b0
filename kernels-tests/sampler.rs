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
