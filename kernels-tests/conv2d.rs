use crate::common::*;
use sd_wgpu::gpu::GemmVariant;
use sd_wgpu::ops::{Conv2dOptions, conv2d::oihw_to_hwio};
use sd_wgpu::{DType, Recorder, ops, reference};

struct Case {
    name: &'static str,
    x: [usize; 4],
    k: usize,
    cout: usize,
    stride: usize,
    pad: [usize; 4],
    bias: bool,
    res: bool,
    w: DType,
    /// 2: the conv reads x nearest-upsampled (diffusers' Upsample2D, fused).
    up: usize,
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // SD 1.5: resnet conv 3×3 320→320 at 64×64 latents, batch 2 (guidance).
    Case { name: "sd resnet 3x3 320->320 64x64 b2", x: [2, 64, 64, 320], k: 3, cout: 320, stride: 1, pad: [1; 4], bias: true, res: false, w: DType::F32, up: 1 },
    // conv_in 4→320 (f16 weights), downsample 3×3 stride 2, 1×1 shortcut with fused residual.
    Case { name: "sd conv_in 3x3 4->320 f16", x: [2, 32, 32, 4], k: 3, cout: 320, stride: 1, pad: [1; 4], bias: true, res: false, w: DType::F16, up: 1 },
    Case { name: "sd downsample 3x3 s2 640", x: [1, 16, 16, 640], k: 3, cout: 640, stride: 2, pad: [1; 4], bias: true, res: false, w: DType::F16, up: 1 },
    Case { name: "sd shortcut 1x1 640->320 +res", x: [2, 16, 16, 640], k: 1, cout: 320, stride: 1, pad: [0; 4], bias: true, res: true, w: DType::F32, up: 1 },
    // VAE encoder downsample: pad (0, 1, 0, 1) then 3×3 stride 2.
    Case { name: "vae asym pad s2", x: [1, 9, 11, 6], k: 3, cout: 5, stride: 2, pad: [0, 1, 0, 1], bias: true, res: false, w: DType::F32, up: 1 },
    // The longest reduction in SD 1.5: up-block conv over 1280 + 1280 concatenated channels
    // (K = 23040); the narrow cout keeps the test quick, the per-thread loop is the same.
    Case { name: "sd up 3x3 2560->64 K=23040", x: [1, 8, 8, 2560], k: 3, cout: 64, stride: 1, pad: [1; 4], bias: true, res: false, w: DType::F16, up: 1 },
    // Odd shapes.
    Case { name: "odd 5x7 3->5 +res f16", x: [3, 5, 7, 3], k: 3, cout: 5, stride: 1, pad: [1; 4], bias: true, res: true, w: DType::F16, up: 1 },
    Case { name: "1x1 image 1 channel", x: [1, 1, 1, 1], k: 1, cout: 1, stride: 1, pad: [0; 4], bias: false, res: false, w: DType::F32, up: 1 },
    Case { name: "3x3 no pad 67 ch", x: [1, 6, 5, 67], k: 3, cout: 65, stride: 1, pad: [0; 4], bias: false, res: true, w: DType::F32, up: 1 },
    // Upsample2D fused: the VAE / U-Net upsampler conv over a 2× nearest-upsampled input.
    Case { name: "sd upsampler 3x3 320 16x16 -> 32x32 f16", x: [2, 16, 16, 320], k: 3, cout: 320, stride: 1, pad: [1; 4], bias: true, res: false, w: DType::F16, up: 2 },
    Case { name: "odd upsampled 5x3 7->5 +res", x: [2, 5, 3, 7], k: 3, cout: 5, stride: 1, pad: [1; 4], bias: true, res: true, w: DType::F32, up: 2 },
    Case { name: "upsampled 1x1 s2 asym pad", x: [1, 3, 4, 6], k: 3, cout: 4, stride: 2, pad: [0, 1, 0, 1], bias: false, res: false, w: DType::F32, up: 2 },
    // Channels in multiples of 4 (the subgroup core's vectorised loop: one K block per tap)
    // with partial tiles, padding on every side, a fused residual, stride 2, upsampling.
    Case { name: "vec4 3x3 12->20 5x7 +res f16", x: [2, 5, 7, 12], k: 3, cout: 20, stride: 1, pad: [1; 4], bias: true, res: true, w: DType::F16, up: 1 },
    Case { name: "vec4 3x3 s2 8->36 asym pad", x: [1, 9, 6, 8], k: 3, cout: 36, stride: 2, pad: [0, 1, 0, 1], bias: true, res: false, w: DType::F32, up: 1 },
    Case { name: "vec4 upsampled 3x4 8->12 +res", x: [2, 3, 4, 8], k: 3, cout: 12, stride: 1, pad: [1; 4], bias: false, res: true, w: DType::F32, up: 2 },
    // A whole panel of output channels with the scalar loop (cin 3): CPU devices' packed weight.
    Case { name: "scalar 3x3 3->32 5x6 +res", x: [1, 5, 6, 3], k: 3, cout: 32, stride: 1, pad: [1; 4], bias: true, res: true, w: DType::F32, up: 1 },
    // At most 4 output channels (CPU devices' narrow kernel where cin is a multiple of 8): the
    // VAE decoder's conv_out to RGB, the U-Net's conv_out, and odd ones (a partial last
    // workgroup, 1 and 2 channels, stride 2, 1x1, upsampled, residuals).
    Case { name: "vae conv_out 3x3 128->3 32x32 b2", x: [2, 32, 32, 128], k: 3, cout: 3, stride: 1, pad: [1; 4], bias: true, res: false, w: DType::F32, up: 1 },
    Case { name: "sd conv_out 3x3 320->4 16x16 b2 f16", x: [2, 16, 16, 320], k: 3, cout: 4, stride: 1, pad: [1; 4], bias: true, res: false, w: DType::F16, up: 1 },
    Case { name: "narrow 3x3 s2 16->1 asym pad +res", x: [3, 7, 9, 16], k: 3, cout: 1, stride: 2, pad: [0, 1, 0, 1], bias: true, res: true, w: DType::F32, up: 1 },
    Case { name: "narrow upsampled 3x3 8->2 +res f16", x: [2, 5, 3, 8], k: 3, cout: 2, stride: 1, pad: [1; 4], bias: false, res: true, w: DType::F16, up: 2 },
    Case { name: "narrow 1x1 24->3 5x7", x: [1, 5, 7, 24], k: 1, cout: 3, stride: 1, pad: [0; 4], bias: true, res: false, w: DType::F32, up: 1 },
];

/// A random `k × k` conv weight (`[k, k, cin, cout]`, scaled by 1/√fan-in) and bias, rounded
/// to f16 where the weight dtype `w` is f16.
fn conv_weights(
    rng: &mut Rng,
    cout: usize,
    cin: usize,
    k: usize,
    w: DType,
) -> (Vec<f32>, Vec<f32>) {
    let fan_in = k * k * cin;
    let w_oihw = rng.normals(cout * fan_in, 1.0 / (fan_in as f32).sqrt());
    let wt = oihw_to_hwio(&w_oihw, cout, cin, k, k);
    let bias = rng.normals(cout, 0.5);
    if w == DType::F16 {
        (round_f16(&wt), round_f16(&bias))
    } else {
        (wt, bias)
    }
}

/// Whether the CPU devices' narrow kernel computes this case (conv2d.rs: `narrow`).
fn narrow_case(core: GemmVariant, c: &Case) -> bool {
    core == GemmVariant::Subgroup && c.cout <= 4 && c.x[3] % 8 == 0
}

#[test]
fn conv2d_matches_reference() {
    // Activations (x, the residuals, the output) in f32, and in f16 (one seed, all but the
    // largest case): read into f32, one rounding when stored (~2^-11 relative error).
    for gpu in gemm_loop_gpus() {
        let core = gpu.gemm_variant();
        let name = core_name(gpu);
        for (act, rtol) in [(DType::F32, 1e-4), (DType::F16, 1.5e-3)] {
            for (ci, c) in CASES.iter().enumerate() {
                let size = c.x.iter().product::<usize>();
                if act == DType::F16 && size > 1_000_000 {
                    continue;
                }
                let seeds: &[u64] = if c.x[1] * c.x[2] * c.x[3] > 100_000 || act == DType::F16 {
                    &[1]
                } else {
                    &[1, 2, 3]
                };
                let act_round = |v: Vec<f32>| if act == DType::F16 { round_f16(&v) } else { v };
                for &seed in seeds {
                    let mut rng = Rng::new(seed * 1000 + ci as u64);
                    let [n, h, w, cin] = c.x;
                    let x = act_round(rng.normals(n * h * w * cin, 1.0));
                    let fan_in = c.k * c.k * cin;
                    let (wt, bias) = conv_weights(&mut rng, c.cout, cin, c.k, c.w);
                    let opts = Conv2dOptions {
                        stride: c.stride,
                        padding: c.pad,
                        upsample: c.up,
                    };
                    let [pt, pb, pl, pr] = c.pad;
                    // The reference convolves the explicitly upsampled input.
                    let (xr, xs) = if c.up == 2 {
                        (
                            reference::upsample_nearest2x(&x, c.x),
                            [n, 2 * h, 2 * w, cin],
                        )
                    } else {
                        (x.clone(), c.x)
                    };
                    let (ho, wo) = (
                        (xs[1] + pt + pb - c.k) / c.stride + 1,
                        (xs[2] + pl + pr - c.k) / c.stride + 1,
                    );
                    let res = act_round(rng.normals(n * ho * wo * c.cout, 1.0));
                    let upload = |d: &[f32], s: &[usize], t, n: &str| upload_to(gpu, d, s, t, n);
                    let xt = upload(&x, &c.x, act, "x");
                    let wtt = upload(&wt, &[c.k, c.k, cin, c.cout], c.w, "conv.weight");
                    let bt = upload(&bias, &[c.cout], c.w, "conv.bias");
                    let rt = upload(&res, &[n, ho, wo, c.cout], act, "residual");
                    let mut rec = Recorder::new(gpu);
                    let out = ops::conv2d(
                        &mut rec,
                        &xt,
                        &wtt,
                        c.bias.then_some(&bt),
                        c.res.then_some(&rt),
                        opts,
                    )
                    .unwrap();
                    let narrow = rec
                        .dispatches()
                        .iter()
                        .any(|d| d.kernel.key.label().contains("NARROW"));
                    assert_eq!(
                        narrow,
                        narrow_case(core, c),
                        "{name} {}: narrow kernel",
                        c.name
                    );
                    let vec4 = narrow || (c.x[3] % 4 == 0 && c.cout % 4 == 0);
                    assert_eq!(
                        ran_load64(&rec),
                        gpu.load64() && vec4,
                        "{name} {}: 64-bit loads",
                        c.name
                    );
                    let got = run(rec, &out);
                    let (want, shape) = reference::conv2d(
                        &xr,
                        xs,
                        &wt,
                        [c.k, c.k, c.cout],
                        c.bias.then_some(&bias[..]),
                        c.res.then_some(&res[..]),
                        c.stride,
                        c.pad,
                    );
                    assert_eq!(out.shape(), shape, "{}", c.name);
                    assert_eq!(out.dtype(), act);
                    check(
                        &format!("conv2d {name} {act:?} {} seed {seed}", c.name),
                        &got,
                        &want,
                        2e-5 * (fan_in as f32).sqrt(),
                        rtol,
                    );
                    // The same weight panel-packed, as CPU devices load convs of whole panels.
                    if core == GemmVariant::Subgroup && c.cout % 32 == 0 {
                        let shape = [c.k, c.k, cin, c.cout];
                        let wp = sd_wgpu::Tensor::from_f32_panels(
                            gpu,
                            &wt,
                            (c.k * c.k * cin, c.cout),
                            c.w,
                            "conv.weight",
                        )
                        .and_then(|t| t.reshape(&shape))
                        .unwrap();
                        let mut rec = Recorder::new(gpu);
                        let out = ops::conv2d(
                            &mut rec,
                            &xt,
                            &wp,
                            c.bias.then_some(&bt),
                            c.res.then_some(&rt),
                            opts,
                        )
                        .unwrap();
                        check(
                            &format!("conv2d panels {name} {act:?} {} seed {seed}", c.name),
                            &run(rec, &out),
                            &want,
                            2e-5 * (fan_in as f32).sqrt(),
                            rtol,
                        );
                    }
                    if c.res {
                        continue;
                    }
                    // A per-image residual [n, cout] (a resnet's time-embedding projection),
                    // added to every pixel of its image.
                    let t = act_round(rng.normals(n * c.cout, 1.0));
                    let tt = upload(&t, &[n, c.cout], act, "temb");
                    let mut rec = Recorder::new(gpu);
                    let out =
                        ops::conv2d(&mut rec, &xt, &wtt, c.bias.then_some(&bt), Some(&tt), opts)
                            .unwrap();
                    let got = run(rec, &out);
                    let per_px = ho * wo * c.cout;
                    let want: Vec<f32> = want
                        .iter()
                        .enumerate()
                        .map(|(i, v)| v + t[(i / per_px) * c.cout + i % c.cout])
                        .collect();
                    check(
                        &format!(
                            "conv2d + per-image residual {name} {act:?} {} seed {seed}",
                            c.name
                        ),
                        &got,
                        &want,
                        2e-5 * (fan_in as f32).sqrt(),
                        rtol,
                    );
                }
            }
        }
    }
}

/// A case of the narrow kernel's variants: which ones CPU devices must pick.
struct NarrowCase {
    name: &'static str,
    x: [usize; 4],
    k: usize,
    cout: usize,
    pad: [usize; 4],
    w: DType,
    /// The weight two elements past a 16-byte boundary (a view into a larger upload).
    unaligned: bool,
    res: bool,
    runs: bool,
}

#[rustfmt::skip]
const NARROW_CASES: &[NarrowCase] = &[
    // Pixel runs (3-wide kernel, stride 1, output rows a multiple of 4) with block-loaded
    // weights: no padding, asymmetric padding with f16 weights, rows one run wide over a
    // partial last workgroup (3 images of 4×4).
    NarrowCase { name: "runs no pad 16->2 6x10", x: [1, 6, 10, 16], k: 3, cout: 2, pad: [0; 4], w: DType::F32, unaligned: false, res: true, runs: true },
    NarrowCase { name: "runs asym pad 8->3 f16", x: [2, 5, 8, 8], k: 3, cout: 3, pad: [0, 2, 2, 0], w: DType::F16, unaligned: false, res: true, runs: true },
    NarrowCase { name: "runs 4 wide b3 24->4", x: [3, 4, 4, 24], k: 3, cout: 4, pad: [1; 4], w: DType::F32, unaligned: false, res: false, runs: true },
    NarrowCase { name: "runs 8->1 f16 12x12", x: [1, 12, 12, 8], k: 3, cout: 1, pad: [1; 4], w: DType::F16, unaligned: false, res: false, runs: true },
    // Weights not 16-byte aligned: each lane loads its own row (runs and per-tap kernel).
    NarrowCase { name: "runs unaligned 16->3 8x8", x: [1, 8, 8, 16], k: 3, cout: 3, pad: [1; 4], w: DType::F32, unaligned: true, res: false, runs: true },
    NarrowCase { name: "taps unaligned f16 8->3 5x7", x: [1, 5, 7, 8], k: 3, cout: 3, pad: [1; 4], w: DType::F16, unaligned: true, res: true, runs: false },
    // Block-loaded weights without runs: a 1×1 kernel, rows not a multiple of 4.
    NarrowCase { name: "taps 1x1 24->3 5x7", x: [1, 5, 7, 24], k: 1, cout: 3, pad: [0; 4], w: DType::F32, unaligned: false, res: false, runs: false },
    NarrowCase { name: "taps 3x3 16->4 5x7 f16", x: [2, 5, 7, 16], k: 3, cout: 4, pad: [1; 4], w: DType::F16, unaligned: false, res: true, runs: false },
];

#[test]
fn narrow_conv_variants_match_reference() {
    // CPU devices (the subgroup core) run these on the narrow kernel with the variant each
    // case names (W_BLOCK for aligned weights, RUNS where the geometry allows); GPUs on
    // their GEMM core. Every device checks the result against the CPU reference.
    for gpu in gemm_loop_gpus() {
        let name = core_name(gpu);
        let subgroup = gpu.gemm_variant() == GemmVariant::Subgroup;
        for (ci, c) in NARROW_CASES.iter().enumerate() {
            let mut rng = Rng::new(77 + ci as u64);
            let [n, h, w, cin] = c.x;
            let x = rng.normals(n * h * w * cin, 1.0);
            let fan_in = c.k * c.k * cin;
            let (wt, bias) = conv_weights(&mut rng, c.cout, cin, c.k, c.w);
            let [pt, pb, pl, pr] = c.pad;
            let (ho, wo) = (h + pt + pb + 1 - c.k, w + pl + pr + 1 - c.k);
            let res = rng.normals(n * ho * wo * c.cout, 1.0);
            let shape = [c.k, c.k, cin, c.cout];
            let wtt = if c.unaligned {
                // Two elements in: 8 bytes (f32) or 4 (f16) past the boundary.
                let mut padded = vec![0.0; 2];
                padded.extend_from_slice(&wt);
                upload_to(gpu, &padded, &[padded.len()], c.w, "conv.weight")
                    .narrow0(2, wt.len())
                    .and_then(|t| t.reshape(&shape))
                    .unwrap()
            } else {
                upload_to(gpu, &wt, &shape, c.w, "conv.weight")
            };
            let xt = upload_to(gpu, &x, &c.x, DType::F32, "x");
            let bt = upload_to(gpu, &bias, &[c.cout], c.w, "conv.bias");
            let rt = upload_to(gpu, &res, &[n, ho, wo, c.cout], DType::F32, "residual");
            let opts = Conv2dOptions {
                stride: 1,
                padding: c.pad,
                upsample: 1,
            };
            let mut rec = Recorder::new(gpu);
            let out =
                ops::conv2d(&mut rec, &xt, &wtt, Some(&bt), c.res.then_some(&rt), opts).unwrap();
            let l = labels(&rec).join(" | ");
            let has = |flag: &str| l.split(' ').any(|w| w == flag);
            assert_eq!(
                has("NARROW"),
                subgroup,
                "{name} {}: narrow kernel in {l}",
                c.name
            );
            assert_eq!(
                has("W_BLOCK"),
                subgroup && !c.unaligned,
                "{name} {}: block weights in {l}",
                c.name
            );
            assert_eq!(
                has("RUNS"),
                subgroup && c.runs,
                "{name} {}: pixel runs in {l}",
                c.name
            );
            let got = run(rec, &out);
            let (want, oshape) = reference::conv2d(
                &x,
                c.x,
                &wt,
                [c.k, c.k, c.cout],
                Some(&bias[..]),
                c.res.then_some(&res[..]),
                1,
                c.pad,
            );
            assert_eq!(out.shape(), oshape, "{}", c.name);
            check(
                &format!("narrow conv2d {name} {}", c.name),
                &got,
                &want,
                2e-5 * (fan_in as f32).sqrt(),
                1e-4,
            );
        }
    }
}

#[test]
fn conv2d_rejects_bad_input() {
    let gpu = gpu();
    let x = upload(&[0.0; 2 * 4 * 4 * 3], &[2, 4, 4, 3], DType::F32, "latents");
    let w = upload(
        &[0.0; 9 * 4 * 8],
        &[3, 3, 4, 8],
        DType::F32,
        "conv_in.weight",
    );
    let mut rec = Recorder::new(gpu);
    let e = ops::conv2d(&mut rec, &x, &w, None, None, Conv2dOptions::new(1, 1))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("conv_in.weight") && e.contains("3 channels"),
        "{e}"
    );
    let w5 = upload(&[0.0; 25 * 3], &[5, 5, 3, 1], DType::F32, "big.weight");
    let e = ops::conv2d(&mut rec, &x, &w5, None, None, Conv2dOptions::new(1, 0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not fit"), "{e}");
}

/// `conv2d(silu(group_norm(x)))` (a resnet's norm, activation and conv): the GPU core reads
/// the norm in place (the tiled device here), CPU devices take a norm pass, both against the
/// reference's norm then conv, zero padding applied to the normalised tensor.
#[test]
fn conv2d_of_a_group_norm_matches_reference() {
    use sd_wgpu::ops::InputNorm;
    // (name, [n, h, w, cin], groups, silu, cout, k, per-image residual, activations). Groups
    // large enough to split over workgroups on GPUs (where the conv reads the norm in place),
    // and a small one (which keeps its norm pass).
    #[rustfmt::skip]
    let cases = [
        ("sd resnet conv1 2x32x32x320 g32 +temb", [2, 32, 32, 320], 32, true, 64, 3, true, DType::F32),
        ("vae 1x64x64x128 g32", [1, 64, 64, 128], 32, true, 32, 3, false, DType::F32),
        ("vec4 cg 4, 2x48x47x12 g3 no silu", [2, 48, 47, 12], 3, false, 8, 3, false, DType::F32),
        ("scalar 1x53x53x6 g2 +temb", [1, 53, 53, 6], 2, true, 5, 3, true, DType::F32),
        ("f16 2x32x32x64 g8 1x1", [2, 32, 32, 64], 8, true, 32, 1, false, DType::F16),
        ("small 1x6x5x6 g2 (norm pass)", [1, 6, 5, 6], 2, true, 5, 3, true, DType::F32),
    ];
    for gpu in gemm_gpus() {
        let core = gpu.gemm_variant();
        for (ci, &(name, xs, groups, silu, cout, k, temb, act)) in cases.iter().enumerate() {
            let mut rng = Rng::new(500 + ci as u64);
            let [n, h, w, cin] = xs;
            let mut x: Vec<f32> = rng
                .normals(n * h * w * cin, 2.0)
                .iter()
                .map(|v| v + 0.7)
                .collect();
            if act == DType::F16 {
                x = round_f16(&x);
            }
            let gamma = rng.normals(cin, 1.0);
            let beta = rng.normals(cin, 0.5);
            let fan_in = k * k * cin;
            let wt = rng.normals(k * k * cin * cout, 1.0 / (fan_in as f32).sqrt());
            let bias = rng.normals(cout, 0.5);
            let t = rng.normals(n * cout, 1.0);
            let t = if act == DType::F16 { round_f16(&t) } else { t };
            let up = |d: &[f32], s: &[usize], dt, nm: &str| upload_to(gpu, d, s, dt, nm);
            let opts = Conv2dOptions::new(1, k / 2);
            let (gt, bt) = (
                up(&gamma, &[cin], DType::F32, "norm.weight"),
                up(&beta, &[cin], DType::F32, "norm.bias"),
            );
            let tt = up(&t, &[n, cout], act, "temb");
            let mut rec = Recorder::new(gpu);
            let y = ops::conv2d_group_norm(
                &mut rec,
                &up(&x, &xs, act, "x"),
                InputNorm {
                    groups,
                    gamma: &gt,
                    beta: &bt,
                    eps: 1e-5,
                    silu,
                },
                &up(&wt, &[k, k, cin, cout], DType::F32, "conv.weight"),
                Some(&up(&bias, &[cout], DType::F32, "conv.bias")),
                temb.then_some(&tt),
                opts,
            )
            .unwrap();
            assert_eq!(y.dtype(), act);
            let fused = rec
                .dispatches()
                .iter()
                .any(|d| d.kernel.key.label().contains("A_GN"));
            let small = name.starts_with("small");
            assert_eq!(
                fused,
                core == GemmVariant::Tiled && !small,
                "{core:?} {name}: norm read in place"
            );
            let got = run(rec, &y);
            let normed =
                reference::group_norm(&x, n, h * w, cin, groups, &gamma, &beta, 1e-5, silu);
            let (want, _) = reference::conv2d(
                &normed,
                xs,
                &wt,
                [k, k, cout],
                Some(&bias),
                None,
                1,
                [k / 2; 4],
            );
            let per_px = h * w * cout;
            let want: Vec<f32> = want
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v + if temb {
                        t[(i / per_px) * cout + i % cout]
                    } else {
                        0.0
                    }
                })
                .collect();
            // f16: the output's rounding, and on CPU devices the stored normalised tensor's
            // (~2^-11 of each of fan_in terms).
            let (atol, rtol) = if act == DType::F16 {
                (2.5e-4 * (fan_in as f32).sqrt(), 1.5e-3)
            } else {
                (3e-5 * (fan_in as f32).sqrt(), 1e-4)
            };
            check(
                &format!("conv2d of group norm {core:?} {name}"),
                &got,
                &want,
                atol,
                rtol,
            );
        }
    }
}

/// Winograd F(2×2, 3×3) (CPU devices' 3×3 stride-1 convs, `ops::winograd`) against the
/// reference and against the direct implicit-GEMM conv it replaces (`Gpu::set_winograd`),
/// on SD shapes and odd ones: partial 2×2 tiles in both directions, a 2× upsampled input,
/// per-pixel and per-image residuals, f16 and panel-packed weights, transformed filters in
/// panels (cout a multiple of 32) and not, and, on devices with 256 KiB and 1 MiB binding
/// limits, a conv done in several chunks of tiles and transformed filters made in parts.
/// (Batches give every case the 64 tiles below which the engine keeps the direct conv.)
#[test]
fn winograd_conv_matches_reference_and_the_direct_conv() {
    use sd_wgpu::{Gpu, GpuOptions};
    // (name, [n, h, w, cin], cout, padding, upsample, residual: 0 none / 1 pixel / 2 image,
    // weight dtype, panel-packed weight, binding limit in KiB (0: the adapter's), F(4×4)
    // tiles: at least 64 4×4 tiles, else F(2×2))
    #[rustfmt::skip]
    let cases = [
        ("sd resnet 3x3 320->320 32x32 b2", [2, 32, 32, 320], 320, [1; 4], 1, 0, DType::F32, true, 0, true),
        ("vae upsampler 3x3 512 8x8 -> 16x16 f16", [1, 8, 8, 512], 512, [1; 4], 2, 0, DType::F16, true, 0, false),
        ("sd resnet conv2 + temb 3x3 64->64 16x16 b2", [2, 16, 16, 64], 64, [1; 4], 1, 2, DType::F32, false, 0, false),
        ("odd 7x5 12->20 + res f16", [6, 7, 5, 12], 20, [1; 4], 1, 1, DType::F16, false, 0, false),
        ("odd upsampled 3x5 8->36 + res", [5, 3, 5, 8], 36, [1; 4], 2, 1, DType::F32, false, 0, false),
        ("no padding 9x6 4->8", [8, 9, 6, 4], 8, [0; 4], 1, 0, DType::F32, false, 0, false),
        ("asym padding 6x7 8->8", [8, 6, 7, 8], 8, [0, 2, 1, 0], 1, 1, DType::F32, false, 0, false),
        ("chunked 40x40 16->32", [1, 40, 40, 16], 32, [1; 4], 1, 1, DType::F32, true, 256, true),
        // F(4×4): partial edge tiles (18 = 4·4 + 2 rows, 21 = 5·4 + 1 columns), asymmetric
        // padding, a 2× upsampled input, a per-image residual, f16 weights.
        ("F4 odd 18x21 8->12 asym pad + res f16", [3, 18, 21, 8], 12, [0, 2, 1, 0], 1, 1, DType::F16, false, 0, true),
        ("F4 upsampled 14x10 8->16 + res", [2, 14, 10, 8], 16, [1; 4], 2, 1, DType::F32, false, 0, true),
        ("F4 + temb 16x16 16->32 b4", [4, 16, 16, 16], 32, [1; 4], 1, 2, DType::F32, true, 0, true),
        // A batch whose input and output exceed a 256 KiB binding, one image not: calls of 3
        // images (F(4×4)) and 1 (36 4×4 tiles: F(2×2)), the residual split with them.
        ("batch in groups 4x24x24 32->32 + res", [4, 24, 24, 32], 32, [1; 4], 1, 1, DType::F32, true, 256, true),
        // One image whose output exceeds a 256 KiB binding: row bands of 34 output rows (F(4×4))
        // and 10 (F(2×2)), the second over a 2× upsampled input starting one row early.
        ("row bands upsampled 22x20 16->48 + res", [1, 22, 20, 16], 48, [1; 4], 2, 1, DType::F32, false, 256, true),
        // Transformed filters larger than a 256 KiB binding, made and multiplied in parts of
        // their elements (two each), over more than one chunk of tiles: F(2×2) (16 × 64 × 64
        // floats; SD's 8×8 latents at 1920 and 2560 input channels) and F(4×4) (36 × 48 × 48).
        ("U in parts F2 8x8 64->64 b4 + res", [4, 8, 8, 64], 64, [1; 4], 1, 1, DType::F32, true, 256, false),
        ("U in parts F4 32x32 48->48 f16", [1, 32, 32, 48], 48, [1; 4], 1, 0, DType::F16, false, 256, true),
        // One chunk of tiles with a filter in two parts (each made right before its product).
        ("U in parts one chunk F2 8x8 128->128 b4", [4, 8, 8, 128], 128, [1; 4], 1, 0, DType::F32, true, 1024, false),
    ];
    let normal = Gpu::with_options(&GpuOptions {
        gemm: Some(GemmVariant::Subgroup),
        ..Default::default()
    })
    .expect("a CPU device with the subgroup GEMM core (lavapipe)");
    let limited = |kib: u64| {
        Gpu::with_options(&GpuOptions {
            gemm: Some(GemmVariant::Subgroup),
            max_storage_binding: Some(kib << 10),
            ..Default::default()
        })
        .unwrap()
    };
    let (small, mid) = (limited(256), limited(1024));
    assert!(normal.winograd(), "Winograd is the CPU devices' default");
    for (ci, (name, xs, cout, pad, up, res_kind, wdt, packed, kib, f4)) in
        cases.into_iter().enumerate()
    {
        let gpu = match kib {
            0 => &normal,
            256 => &small,
            1024 => &mid,
            _ => unreachable!("{name}: no device with a {kib} KiB binding limit"),
        };
        let mut rng = Rng::new(7000 + ci as u64);
        let [n, h, w, cin] = xs;
        let x = rng.normals(n * h * w * cin, 1.0);
        let fan_in = 9 * cin;
        let w_oihw = rng.normals(cout * fan_in, 1.0 / (fan_in as f32).sqrt());
        let mut wt = oihw_to_hwio(&w_oihw, cout, cin, 3, 3);
        let mut bias = rng.normals(cout, 0.5);
        if wdt == DType::F16 {
            wt = round_f16(&wt);
            bias = round_f16(&bias);
        }
        let (xr, rs) = if up == 2 {
            (
                reference::upsample_nearest2x(&x, xs),
                [n, 2 * h, 2 * w, cin],
            )
        } else {
            (x.clone(), xs)
        };
        let [pt, pb, pl, pr] = pad;
        let (ho, wo) = (rs[1] + pt + pb - 2, rs[2] + pl + pr - 2);
        let res = match res_kind {
            1 => rng.normals(n * ho * wo * cout, 1.0),
            2 => rng.normals(n * cout, 1.0),
            _ => vec![],
        };
        let res_shape: Vec<usize> = if res_kind == 2 {
            vec![n, cout]
        } else {
            vec![n, ho, wo, cout]
        };
        let xt = upload_to(gpu, &x, &xs, DType::F32, "x");
        let wtt = if packed {
            sd_wgpu::Tensor::from_f32_panels(gpu, &wt, (9 * cin, cout), wdt, "conv.weight")
                .and_then(|t| t.reshape(&[3, 3, cin, cout]))
                .unwrap()
        } else {
            upload_to(gpu, &wt, &[3, 3, cin, cout], wdt, "conv.weight")
        };
        let bt = upload_to(gpu, &bias, &[cout], wdt, "conv.bias");
        let rt = (res_kind > 0).then(|| upload_to(gpu, &res, &res_shape, DType::F32, "residual"));
        let opts = Conv2dOptions {
            stride: 1,
            padding: pad,
            upsample: up,
        };
        let (mut want, shape) = reference::conv2d(
            &xr,
            rs,
            &wt,
            [3, 3, cout],
            Some(&bias),
            (res_kind == 1).then_some(&res[..]),
            1,
            pad,
        );
        if res_kind == 2 {
            let per_img = ho * wo * cout;
            for (i, v) in want.iter_mut().enumerate() {
                *v += res[(i / per_img) * cout + i % cout];
            }
        }
        let mut outs = Vec::new();
        // Winograd with and without 64-bit loads and stores (`Gpu::load64`: the same bits),
        // then the direct conv.
        for (on, wide) in [(true, true), (true, false), (false, true)] {
            gpu.set_winograd(on);
            gpu.set_load64(wide);
            let mut rec = Recorder::new(gpu);
            let out = ops::conv2d(&mut rec, &xt, &wtt, Some(&bt), rt.as_ref(), opts).unwrap();
            assert_eq!(out.shape(), shape, "{name}");
            let labels: Vec<String> = rec
                .dispatches()
                .iter()
                .map(|d| d.kernel.key.label())
                .collect();
            let wino = labels.iter().any(|l| l.contains("WINO_IN"));
            let tile4 = labels
                .iter()
                .any(|l| l.contains("WINO_IN") && l.contains("F4"));
            assert_eq!(
                (wino, tile4),
                (on, on && f4),
                "{name}: Winograd {on}, F(4x4) {f4}"
            );
            assert_eq!(ran_load64(&rec), wide, "{name}: 64-bit loads");
            if on && name.starts_with("U in parts") {
                let count = |flag: &str| labels.iter().filter(|l| l.contains(flag)).count();
                assert_eq!(
                    count("WINO_W"),
                    2,
                    "{name}: transformed filter in two parts"
                );
                let one_chunk = name.contains("one chunk");
                assert_eq!(count("WINO_IN") == 1, one_chunk, "{name}: chunks of tiles");
            }
            let got = run(rec, &out);
            let path = match (on, wide) {
                (true, true) => "Winograd load64",
                (true, false) => "Winograd",
                _ => "direct",
            };
            check(
                &format!("conv2d {path} {name}"),
                &got,
                &want,
                2e-5 * (fan_in as f32).sqrt(),
                1e-4,
            );
            outs.push(got);
        }
        gpu.set_winograd(true);
        gpu.set_load64(true);
        assert_eq!(
            outs[0], outs[1],
            "{name}: 64-bit loads changed the Winograd conv's bits"
        );
        // A different algorithm rounds differently: equal outputs would mean one path ran twice.
        assert_ne!(
            outs[0], outs[2],
            "{name}: Winograd and the direct conv gave identical bits"
        );
    }
    // Below 64 tiles the filter transform costs more than it saves: the direct conv runs.
    let mut rng = Rng::new(7100);
    let x = upload_to(
        &normal,
        &rng.normals(6 * 6 * 8, 1.0),
        &[1, 6, 6, 8],
        DType::F32,
        "x",
    );
    let wt = upload_to(
        &normal,
        &rng.normals(9 * 8 * 8, 0.1),
        &[3, 3, 8, 8],
        DType::F32,
        "w",
    );
    let mut outs = Vec::new();
    for on in [true, false] {
        normal.set_winograd(on);
        let mut rec = Recorder::new(&normal);
        let out = ops::conv2d(&mut rec, &x, &wt, None, None, Conv2dOptions::new(1, 1)).unwrap();
        outs.push(run(rec, &out));
    }
    normal.set_winograd(true);
    assert_eq!(outs[0], outs[1], "9 tiles: the direct conv either way");
}
