//! Shared test helpers: the device, seeded random data, and the tolerance check.

use sd_wgpu::gpu::GemmVariant;
use sd_wgpu::{DType, Gpu, GpuOptions, Recorder, Tensor};
use std::sync::OnceLock;

/// The one device of this test binary. Fails the test (never skips) when there is none.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| match Gpu::new() {
        Ok(g) => {
            eprintln!(
                "kernels-tests on: {} ({:?})",
                g.adapter_info().name,
                g.adapter_info().backend
            );
            g
        }
        Err(e) => panic!("GPU tests need a wgpu adapter: {e}"),
    })
}

/// Devices for each GEMM core this adapter can run: the default one first, then the other
/// core where the adapter supports it (on llvmpipe both run, so CI tests the tiled core that
/// real GPUs use as well as the subgroup core it picks for itself).
pub fn gemm_gpus() -> Vec<&'static Gpu> {
    static OTHER: OnceLock<Option<Gpu>> = OnceLock::new();
    let main = gpu();
    let other = OTHER.get_or_init(|| {
        let want = match main.gemm_variant() {
            GemmVariant::Tiled => GemmVariant::Subgroup,
            GemmVariant::Subgroup => GemmVariant::Tiled,
        };
        Gpu::with_options(&GpuOptions {
            gemm: Some(want),
            ..Default::default()
        })
        .ok()
    });
    std::iter::once(main).chain(other.as_ref()).collect()
}

/// `gemm_gpus`, then, where the default device's subgroup core reads its vec4 operands as
/// 64-bit words (`Gpu::load64`), one more subgroup-core device with those loads off: CI tests
/// both loops of the core that llvmpipe runs.
pub fn gemm_loop_gpus() -> Vec<&'static Gpu> {
    static NO64: OnceLock<Option<Gpu>> = OnceLock::new();
    let no64 = NO64.get_or_init(|| {
        gpu().load64().then(|| {
            let g = Gpu::new().expect("a second device on the test adapter");
            g.set_load64(false);
            g
        })
    });
    gemm_gpus().into_iter().chain(no64.as_ref()).collect()
}

/// The GEMM core a device runs and whether it loads 64-bit words, for test messages.
pub fn core_name(gpu: &Gpu) -> String {
    let wide = if gpu.load64() { "+load64" } else { "" };
    format!("{:?}{wide}", gpu.gemm_variant())
}

/// The kernel label of every dispatch of a recording, in order.
pub fn labels(rec: &Recorder<'_>) -> Vec<String> {
    rec.dispatches()
        .iter()
        .map(|d| d.kernel.key.label())
        .collect()
}

/// Whether a recording ran the 64-bit-load variant of a kernel.
pub fn ran_load64(rec: &Recorder<'_>) -> bool {
    labels(rec).iter().any(|l| l.contains("LOAD64"))
}

/// Seeded test data: the library's SplitMix64 / Box–Muller source.
pub use sd_wgpu::rng::SplitMix64 as Rng;

/// NCHW → NHWC.
pub fn nhwc(v: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out[((b * h + y) * w + x) * c + ch] = v[((b * c + ch) * h + y) * w + x];
                }
            }
        }
    }
    out
}

/// Rounds through f16, as an f16 upload stores the values.
pub fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

pub fn upload(data: &[f32], shape: &[usize], dtype: DType, name: &str) -> Tensor {
    upload_to(gpu(), data, shape, dtype, name)
}

pub fn upload_to(g: &Gpu, data: &[f32], shape: &[usize], dtype: DType, name: &str) -> Tensor {
    Tensor::from_f32(g, data, shape, dtype, name).expect("upload")
}

/// Submits the recorder and reads `t` back.
pub fn run(mut rec: Recorder<'_>, t: &Tensor) -> Vec<f32> {
    rec.submit().expect("submit");
    t.to_vec(rec.gpu()).expect("readback")
}

/// `|got − want| ≤ atol + rtol·|want|` for every element; on failure names the case, the
/// worst element (index, both values, error / allowed) and how many elements failed.
pub fn check(case: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    if let Err(msg) = try_check(case, got, want, atol, rtol) {
        panic!("{msg}");
    }
}

/// [`check`] that returns the failure message instead of panicking, for tests that run
/// every case before failing.
pub fn try_check(
    case: &str,
    got: &[f32],
    want: &[f32],
    atol: f32,
    rtol: f32,
) -> Result<(), String> {
    if got.len() != want.len() || want.is_empty() {
        return Err(format!(
            "{case}: {} values back, {} expected",
            got.len(),
            want.len()
        ));
    }
    let mut worst = (0usize, -1.0f32);
    let mut bad = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let allowed = atol + rtol * w.abs();
        let err = (g - w).abs();
        // NaN fails: the ratio is NaN, which we map to infinity.
        let ratio = if err.is_nan() {
            f32::INFINITY
        } else {
            err / allowed
        };
        if ratio > 1.0 {
            bad += 1;
        }
        if ratio > worst.1 {
            worst = (i, ratio);
        }
    }
    let (i, ratio) = worst;
    let msg = format!(
        "{case}: worst element {i}: gpu {} vs ref {} (|err| = {:.3e}, {:.2}× the allowed {:.3e}); {bad} of {} elements out of tolerance",
        got[i],
        want[i],
        (got[i] - want[i]).abs(),
        ratio,
        atol + rtol * want[i].abs(),
        got.len()
    );
    if bad > 0 {
        return Err(msg);
    }
    eprintln!("ok {msg}");
    Ok(())
}

/// `req`'s run of the tiny 32² pipelines against the golden case `name` of `g`
/// (`final_<name>` [1, 4, 8, 8] latents, `image_<name>` [1, 32, 32, 3]): final latents within
/// 1e-3 relative L2, the image ≥ 40 dB.
pub fn check_golden(
    pipe: &sd_wgpu::pipeline::Pipeline,
    g: &sd_wgpu::weights::Weights,
    name: &str,
    req: &sd_wgpu::pipeline::Request,
) {
    let out = pipe.generate(gpu(), req, &mut |_| true).unwrap();
    let want = g.read_f32(&format!("final_{name}"), &[1, 4, 8, 8]).unwrap();
    let img = g
        .read_f32(&format!("image_{name}"), &[1, 32, 32, 3])
        .unwrap();
    let (e, p) = (rel_l2(&out.latents, &want), psnr(&out.image, &img));
    eprintln!("{name}: final latents relative L2 {e:.2e}, image {p:.1} dB");
    assert!(e <= 1e-3, "{name}: latents relative L2 {e}");
    assert!(p >= 40.0, "{name}: {p} dB");
}

/// ‖a − b‖ / ‖b‖ (the reference `b`).
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Peak signal-to-noise ratio of images with values in [0, 1].
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (1.0 / mse.max(1e-20)).log10()
}
