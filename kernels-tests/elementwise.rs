use crate::common::*;
use sd_wgpu::ops::{Binary, Unary};
use sd_wgpu::{DType, Recorder, ops, reference};

#[test]
fn unary_activations_match_reference() {
    for gpu in gemm_gpus() {
        unary_activations_match_reference_on(gpu);
    }
}

/// On each device of `gemm_gpus`: CPU devices run the looping 8-thread layout of the flat
/// kernels, the other device the one-element-per-thread layout that GPUs use.
fn unary_activations_match_reference_on(gpu: &sd_wgpu::Gpu) {
    let shapes: &[&[usize]] = &[&[2, 64, 64, 320], &[7], &[1]];
    type Case = (Unary, f32, f32, fn(f32) -> f32);
    let cases: &[Case] = &[
        (Unary::Affine, 0.18215, -0.5, |x| x),
        (Unary::Silu, 1.0, 0.0, reference::silu),
        (Unary::Gelu, 1.0, 0.0, reference::gelu),
        (Unary::QuickGelu, 2.0, 0.25, reference::quick_gelu),
        (Unary::Tanh, 1.0 / 3.0, 0.0, |x| {
            (f64::from(x)).tanh() as f32
        }),
        // Far into the saturated range, where e^{2t} would overflow.
        (Unary::Tanh, 40.0, 0.0, |x| (f64::from(x)).tanh() as f32),
    ];
    for shape in shapes {
        let n: usize = shape.iter().product();
        let x = Rng::new(n as u64).normals(n, 3.0);
        let xt = upload_to(gpu, &x, shape, DType::F32, "x");
        for &(f, alpha, beta, r) in cases {
            let mut rec = Recorder::new(gpu);
            let y = ops::unary(&mut rec, &xt, f, alpha, beta).unwrap();
            let got = run(rec, &y);
            let want: Vec<f32> = x.iter().map(|&v| r(alpha * v + beta)).collect();
            check(&format!("unary {f:?} {shape:?}"), &got, &want, 1e-6, 1e-5);
        }
    }
}

#[test]
fn binary_broadcasts_match_reference() {
    for gpu in gemm_gpus() {
        binary_broadcasts_match_reference_on(gpu);
    }
}

/// On each device of `gemm_gpus`: CPU devices run the looping 8-thread layout of the flat
/// kernels, the other device the one-element-per-thread layout that GPUs use.
fn binary_broadcasts_match_reference_on(gpu: &sd_wgpu::Gpu) {
    let mut rng = Rng::new(3);
    // (x shape, z shape, how z broadcasts: index of z for element i of x)
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 64, 64, 320], &[2, 64, 64, 320]),
        (&[2, 4096, 320], &[320]),
        (&[2, 32, 32, 640], &[2, 640]),
        (&[3, 5, 7], &[5, 7]),
        (&[5, 37, 13], &[5, 13]),
        (&[1], &[1]),
    ];
    for &(xs, zs) in cases {
        let (n, nz) = (xs.iter().product::<usize>(), zs.iter().product::<usize>());
        let x = rng.normals(n, 1.0);
        let z = rng.normals(nz, 1.0);
        let c = *xs.last().unwrap();
        let zi = |i: usize| -> usize {
            if xs == zs {
                i
            } else if zs.len() == 2 && xs.len() > 2 && zs[0] == xs[0] && zs[1] == c {
                (i / (n / xs[0])) * c + i % c
            } else {
                i % nz
            }
        };
        let (xt, zt) = (
            upload_to(gpu, &x, xs, DType::F32, "x"),
            upload_to(gpu, &z, zs, DType::F32, "z"),
        );
        for op in [Binary::Add, Binary::Mul] {
            let mut rec = Recorder::new(gpu);
            let y = ops::binary(&mut rec, &xt, &zt, op).unwrap();
            let got = run(rec, &y);
            let want: Vec<f32> = (0..n)
                .map(|i| {
                    if op == Binary::Add {
                        x[i] + z[zi(i)]
                    } else {
                        x[i] * z[zi(i)]
                    }
                })
                .collect();
            check(
                &format!("binary {op:?} {xs:?} ∘ {zs:?}"),
                &got,
                &want,
                0.0,
                1e-7,
            );
        }
    }
    let mut rec = Recorder::new(gpu);
    let (a, b) = (
        upload_to(gpu, &[0.0; 6], &[2, 3], DType::F32, "a"),
        upload_to(gpu, &[0.0; 2], &[2], DType::F32, "temb"),
    );
    assert!(
        ops::add(&mut rec, &a, &b)
            .unwrap_err()
            .to_string()
            .contains("temb")
    );
}

#[test]
fn geglu_upsample_concat_match_reference() {
    for gpu in gemm_gpus() {
        geglu_upsample_concat_match_reference_on(gpu);
    }
}

/// On each device of `gemm_gpus`: CPU devices run the looping 8-thread layout of the flat
/// kernels, the other device the one-element-per-thread layout that GPUs use.
fn geglu_upsample_concat_match_reference_on(gpu: &sd_wgpu::Gpu) {
    let mut rng = Rng::new(9);
    for (rows, f) in [(2 * 1024, 1280), (3, 5), (97, 13), (1, 1)] {
        let x = rng.normals(rows * 2 * f, 2.0);
        let mut rec = Recorder::new(gpu);
        let y = ops::geglu(
            &mut rec,
            &upload_to(gpu, &x, &[rows, 2 * f], DType::F32, "ff.proj.out"),
        )
        .unwrap();
        assert_eq!(y.shape(), [rows, f]);
        check(
            &format!("geglu {rows}x{f}"),
            &run(rec, &y),
            &reference::geglu(&x, f),
            1e-6,
            1e-5,
        );
    }
    for s in [[2, 32, 32, 640], [1, 3, 5, 7], [1, 1, 1, 1]] {
        let x = rng.normals(s.iter().product(), 1.0);
        let mut rec = Recorder::new(gpu);
        let y =
            ops::upsample_nearest2x(&mut rec, &upload_to(gpu, &x, &s, DType::F32, "x")).unwrap();
        assert_eq!(y.shape(), [s[0], 2 * s[1], 2 * s[2], s[3]]);
        check(
            &format!("upsample {s:?}"),
            &run(rec, &y),
            &reference::upsample_nearest2x(&x, s),
            0.0,
            0.0,
        );
    }
    // General sizes: the U-Net's odd skips (5 → 9, 3 → 5), shrinking, identity.
    for (s, oh, ow) in [
        ([2, 5, 6, 3], 9, 11),
        ([1, 3, 3, 640], 5, 5),
        ([1, 7, 5, 2], 3, 4),
        ([1, 4, 4, 1], 4, 4),
    ] {
        let x = rng.normals(s.iter().product(), 1.0);
        let mut rec = Recorder::new(gpu);
        let y = ops::upsample_nearest(&mut rec, &upload_to(gpu, &x, &s, DType::F32, "x"), oh, ow)
            .unwrap();
        assert_eq!(y.shape(), [s[0], oh, ow, s[3]]);
        check(
            &format!("upsample {s:?} to {oh}x{ow}"),
            &run(rec, &y),
            &reference::upsample_nearest(&x, s, oh, ow),
            0.0,
            0.0,
        );
    }
    for (rows, ca, cb) in [(2 * 32 * 32, 1280, 640), (5, 3, 1), (301, 5, 6), (1, 1, 1)] {
        let (a, b) = (rng.normals(rows * ca, 1.0), rng.normals(rows * cb, 1.0));
        let mut rec = Recorder::new(gpu);
        let y = ops::concat_channels(
            &mut rec,
            &upload_to(gpu, &a, &[rows, ca], DType::F32, "a"),
            &upload_to(gpu, &b, &[rows, cb], DType::F32, "skip"),
        )
        .unwrap();
        check(
            &format!("concat {rows}x({ca}+{cb})"),
            &run(rec, &y),
            &reference::concat_channels(&a, &b, ca, cb),
            0.0,
            0.0,
        );
    }
}

#[test]
fn timestep_embedding_matches_diffusers_formula() {
    let gpu = gpu();
    // SD U-Net: dim 320, flip_sin_to_cos = true, freq_shift = 0; timesteps across the range.
    let t = [999.0f32, 981.0, 500.0, 1.0, 0.0];
    for (dim, flip, shift) in [
        (320, true, 0.0),
        (1280, false, 1.0),
        (7, false, 1.0),
        (2, true, 0.0),
    ] {
        let mut rec = Recorder::new(gpu);
        let y = ops::timestep_embedding(
            &mut rec,
            &upload(&t, &[t.len()], DType::F32, "t"),
            dim,
            flip,
            shift,
            1.0,
            10000.0,
        )
        .unwrap();
        let got = run(rec, &y);
        let want = reference::timestep_embedding(&t, dim, flip, shift, 1.0, 10000.0);
        // Arguments up to 999 rad: f32 exp may differ from torch's by an ulp, which moves
        // the argument by ~1e-4 rad at t = 999.
        check(
            &format!("timestep_embedding dim {dim} flip {flip}"),
            &got,
            &want,
            3e-4,
            0.0,
        );
    }
}

/// RGB → packed RGBA8 texels (the texture output): bit-exact against the plain-loop reference,
/// values beyond [0, 1] and exact half-steps (k + 0.5)/255 included, RGBA and BGRA, SD's 512²
/// and odd sizes (row padding to 64 texels).
#[test]
fn to_rgba8_matches_reference_bit_exactly() {
    let gpu = gpu();
    for (h, w) in [(512, 512), (37, 23), (1, 1), (3, 65)] {
        let n = h * w * 3;
        let mut x: Vec<f32> = Rng::new(n as u64)
            .normals(n, 0.6)
            .iter()
            .map(|v| v + 0.5)
            .collect();
        for (i, v) in x.iter_mut().enumerate().step_by(7) {
            *v = ((i % 256) as f32 + 0.5) / 255.0;
        }
        let xt = upload(&x, &[h, w, 3], DType::F32, "image");
        for swap in [false, true] {
            let mut rec = Recorder::new(gpu);
            let y = ops::to_rgba8(&mut rec, &xt, swap).unwrap();
            let row = ops::rgba8_row(w);
            assert_eq!(y.shape(), [h, row]);
            let got: Vec<u32> = run(rec, &y).iter().map(|v| v.to_bits()).collect();
            let want = reference::to_rgba8(&x, h, w, row, swap);
            let bad = got.iter().zip(&want).position(|(a, b)| a != b);
            assert!(
                bad.is_none(),
                "to_rgba8 {h}x{w} swap {swap}: texel {} is {:08x}, reference {:08x}",
                bad.unwrap(),
                got[bad.unwrap()],
                want[bad.unwrap()]
            );
        }
    }
    let bad = upload(&[0.0; 8], &[2, 4], DType::F32, "two channels");
    let e = ops::to_rgba8(&mut Recorder::new(gpu), &bad, false)
        .err()
        .unwrap();
    assert!(e.to_string().contains("two channels"), "{e}");
}
