//! The runtime's guarantees: grids split within the device's per-dimension limit, bindings
//! split within max_storage_buffer_binding_size (or a typed error naming it), buffer reuse
//! can be switched off, memory is accounted.

use crate::common::*;
use sd_wgpu::ops::{Conv2dOptions, Unary};
use sd_wgpu::{DType, Error, Gpu, GpuOptions, Recorder, Tensor, ops, reference};

/// A device with tiny limits, so that splitting paths run on small tensors.
fn small_limits_gpu() -> Gpu {
    Gpu::with_options(&GpuOptions {
        max_storage_binding: Some(1 << 16),
        max_workgroups_per_dim: Some(7),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("GPU tests need a wgpu adapter: {e}"))
}

#[test]
fn ops_split_grids_and_bindings_to_fit_small_limits() {
    let g = small_limits_gpu();
    assert_eq!(g.limits().max_storage_buffer_binding_size, 1 << 16);
    let mut rng = Rng::new(21);
    let read = |rec: Recorder<'_>, t: &Tensor| {
        let mut rec = rec;
        rec.submit().unwrap();
        t.to_vec(&g).unwrap()
    };
    // 100k elements = 400 KB: 7 binding chunks, each needing a split grid (> 7 workgroups).
    let x = rng.normals(100_000, 1.0);
    let xt = Tensor::from_f32(&g, &x, &[100, 1000], DType::F32, "x").unwrap();
    let mut rec = Recorder::new(&g);
    let y = ops::unary(&mut rec, &xt, Unary::Silu, 1.0, 0.0).unwrap();
    assert!(
        rec.len() >= 7,
        "expected the op to split, got {} dispatches",
        rec.len()
    );
    check(
        "split silu",
        &read(rec, &y),
        &x.iter().map(|&v| reference::silu(v)).collect::<Vec<_>>(),
        1e-6,
        1e-5,
    );

    // GEGLU split by whole rows of its (twice as wide) input: 100 rows of 2·500.
    let mut rec = Recorder::new(&g);
    let y = ops::geglu(&mut rec, &xt).unwrap();
    assert!(rec.len() >= 7, "geglu did not split: {}", rec.len());
    check(
        "split geglu",
        &read(rec, &y),
        &reference::geglu(&x, 500),
        1e-6,
        1e-5,
    );

    // matmul with 300 rows of 100 (120 KB) split by rows; B fits.
    let (m, k, n) = (300, 100, 60);
    let a = rng.normals(m * k, 1.0);
    let b = rng.normals(k * n, 0.1);
    let at = Tensor::from_f32(&g, &a, &[m, k], DType::F32, "a").unwrap();
    let bt = Tensor::from_f32(&g, &b, &[k, n], DType::F32, "b").unwrap();
    let mut rec = Recorder::new(&g);
    let c = ops::matmul(&mut rec, &at, &bt, None).unwrap();
    assert!(rec.len() >= 2);
    check(
        "split matmul",
        &read(rec, &c),
        &reference::matmul(&a, &b, None, 1, m, n, k, false),
        1e-4,
        1e-4,
    );

    // Broadcast add per (batch, channel) over 4 images of 8 KB... of 64 KB each.
    let xs = [4, 64, 64, 4];
    let xv = rng.normals(xs.iter().product(), 1.0);
    let zv = rng.normals(16, 1.0);
    let xt = Tensor::from_f32(&g, &xv, &xs, DType::F32, "h").unwrap();
    let zt = Tensor::from_f32(&g, &zv, &[4, 4], DType::F32, "temb").unwrap();
    let mut rec = Recorder::new(&g);
    let y = ops::add(&mut rec, &xt, &zt).unwrap();
    let want: Vec<f32> = xv
        .iter()
        .enumerate()
        .map(|(i, v)| v + zv[(i / 16384) * 4 + i % 4])
        .collect();
    check("split broadcast add", &read(rec, &y), &want, 0.0, 1e-7);

    // conv over 3 images of 24 KB each plus group norm split per image.
    let (xs, cout) = ([3, 16, 16, 24], 8);
    let xv = rng.normals(xs.iter().product(), 1.0);
    let wv = rng.normals(9 * 24 * cout, 0.1);
    let xt = Tensor::from_f32(&g, &xv, &xs, DType::F32, "x").unwrap();
    let wt = Tensor::from_f32(&g, &wv, &[3, 3, 24, cout], DType::F32, "w").unwrap();
    let mut rec = Recorder::new(&g);
    let y = ops::conv2d(&mut rec, &xt, &wt, None, None, Conv2dOptions::new(1, 1)).unwrap();
    let (want, _) = reference::conv2d(&xv, xs, &wv, [3, 3, cout], None, None, 1, [1; 4]);
    check("split conv2d", &read(rec, &y), &want, 1e-4, 1e-4);

    // A single image larger than one binding: conv2d splits it into bands of rows (stride 1
    // and 2, padding on every side, residual), exactly as the unsplit reference computes it.
    // With a fused 2× upsample (up = 2) a band starts on a stored row: odd band edges too.
    for (xs, k, cout, stride, pad, with_res, up) in [
        ([1, 70, 33, 16], 3, 12, 1, [1, 1, 1, 1], true, 1),
        ([1, 71, 30, 16], 3, 8, 2, [1, 1, 1, 1], false, 1),
        ([2, 40, 41, 24], 3, 8, 2, [0, 1, 0, 1], true, 1),
        ([1, 37, 29, 16], 3, 12, 1, [1, 1, 1, 1], true, 2),
        ([2, 35, 20, 24], 3, 8, 2, [0, 1, 0, 1], false, 2),
    ] {
        let [n, h, w, cin] = xs;
        let (xv0, xs0) = (rng.normals(n * h * w * cin, 1.0), xs);
        let (xv_ref, xs, h, w) = if up == 2 {
            (
                reference::upsample_nearest2x(&xv0, xs0),
                [n, 2 * h, 2 * w, cin],
                2 * h,
                2 * w,
            )
        } else {
            (xv0.clone(), xs0, h, w)
        };
        assert!(
            h * w * cin * 4 > 1 << 16,
            "the case must exceed one binding"
        );
        let wv = rng.normals(k * k * cin * cout, 0.1);
        let (ho, wo) = (
            (h + pad[0] + pad[1] - k) / stride + 1,
            (w + pad[2] + pad[3] - k) / stride + 1,
        );
        let rv = rng.normals(n * ho * wo * cout, 1.0);
        let xt = Tensor::from_f32(&g, &xv0, &xs0, DType::F32, "vae.decoder.h").unwrap();
        let wt = Tensor::from_f32(&g, &wv, &[k, k, cin, cout], DType::F32, "w").unwrap();
        let rt = Tensor::from_f32(&g, &rv, &[n, ho, wo, cout], DType::F32, "res").unwrap();
        let mut rec = Recorder::new(&g);
        let opts = Conv2dOptions {
            stride,
            padding: pad,
            upsample: up,
        };
        let y = ops::conv2d(&mut rec, &xt, &wt, None, with_res.then_some(&rt), opts).unwrap();
        assert!(
            rec.len() > n,
            "expected bands, got {} dispatches",
            rec.len()
        );
        let (want, _) = reference::conv2d(
            &xv_ref,
            xs,
            &wv,
            [k, k, cout],
            None,
            with_res.then_some(&rv[..]),
            stride,
            pad,
        );
        check(
            &format!("banded conv2d {xs0:?} s{stride} up{up}"),
            &read(rec, &y),
            &want,
            1e-4,
            1e-4,
        );
        if !with_res {
            // A per-image residual [n, cout] reaches every band of its image.
            let tv = rng.normals(n * cout, 1.0);
            let tt = Tensor::from_f32(&g, &tv, &[n, cout], DType::F32, "temb").unwrap();
            let mut rec = Recorder::new(&g);
            let y = ops::conv2d(&mut rec, &xt, &wt, None, Some(&tt), opts).unwrap();
            let per_px = ho * wo * cout;
            let want: Vec<f32> = want
                .iter()
                .enumerate()
                .map(|(i, v)| v + tv[(i / per_px) * cout + i % cout])
                .collect();
            check(
                &format!("banded conv2d + per-image residual {xs0:?} s{stride} up{up}"),
                &read(rec, &y),
                &want,
                1e-4,
                1e-4,
            );
        }
    }

    // Group norm over images larger than one binding: per-band statistics merged exactly
    // (data offset by 1000 to exercise the merge), SiLU fused, two images.
    for (shape, groups, silu) in [([2, 64, 70, 12], 3, true), ([1, 97, 31, 16], 4, false)] {
        let [n, h, w, c] = shape;
        assert!(h * w * c * 4 > 1 << 16);
        let xv: Vec<f32> = rng
            .normals(n * h * w * c, 2.0)
            .iter()
            .map(|v| v + 1000.0)
            .collect();
        let (gv, bv) = (rng.normals(c, 1.0), rng.normals(c, 1.0));
        let xt = Tensor::from_f32(&g, &xv, &shape, DType::F32, "h").unwrap();
        let gt = Tensor::from_f32(&g, &gv, &[c], DType::F32, "gn.w").unwrap();
        let bt = Tensor::from_f32(&g, &bv, &[c], DType::F32, "gn.b").unwrap();
        let mut rec = Recorder::new(&g);
        let y = ops::group_norm(&mut rec, &xt, groups, &gt, &bt, 1e-6, silu).unwrap();
        assert!(
            rec.len() > 3 * n,
            "expected banded dispatches, got {}",
            rec.len()
        );
        let want = reference::group_norm(&xv, n, h * w, c, groups, &gv, &bv, 1e-6, silu);
        check(
            &format!("banded group_norm {shape:?}"),
            &read(rec, &y),
            &want,
            2e-3,
            1e-4,
        );
    }

    // What cannot be split (attention over a sequence larger than one binding): a typed
    // error naming the tensor and the limit, never a wgpu validation panic.
    let big = Tensor::zeros(&g, &[1, 128 * 128, 4], DType::F32, "vae.mid.attn.q").unwrap();
    let mut rec = Recorder::new(&g);
    match ops::attention(
        &mut rec,
        &big,
        &big,
        &big,
        ops::AttentionOptions {
            heads: 1,
            causal: false,
            scale: None,
        },
    ) {
        Err(Error::Limit {
            limit_name, tensor, ..
        }) => {
            assert_eq!(limit_name, "max_storage_buffer_binding_size");
            assert!(tensor.contains("vae.mid.attn.q"), "{tensor}");
        }
        other => panic!("expected a limit error, got {other:?}"),
    }
}

#[test]
fn buffer_reuse_switch_and_memory_accounting() {
    let g = Gpu::with_options(&GpuOptions::default())
        .unwrap_or_else(|e| panic!("GPU tests need a wgpu adapter: {e}"));
    let before = g.memory_stats();
    assert_eq!(before.allocated, 0);
    {
        let _a = Tensor::zeros(&g, &[1000], DType::F32, "a").unwrap();
        let s = g.memory_stats();
        assert!(s.in_use >= 4000 && s.allocated >= 4000, "{s:?}");
    }
    // Dropped: back in the pool, still allocated; the next request of that size reuses it.
    let s = g.memory_stats();
    assert_eq!(s.in_use, 0);
    let _b = Tensor::zeros(&g, &[1000], DType::F32, "b").unwrap();
    assert_eq!(
        g.memory_stats().allocated,
        s.allocated,
        "a pooled buffer should be reused"
    );
    // Reuse off: released buffers are destroyed, every request allocates.
    g.set_buffer_reuse(false);
    let mut rng = Rng::new(1);
    let x = rng.normals(4096, 1.0);
    for i in 0..3 {
        let xt = Tensor::from_f32(&g, &x, &[64, 64], DType::F32, "x").unwrap();
        let mut rec = Recorder::new(&g);
        let y = ops::unary(&mut rec, &xt, Unary::Gelu, 1.0, 0.0).unwrap();
        rec.submit().unwrap();
        let got = y.to_vec(&g).unwrap();
        check(
            &format!("gelu with reuse off, round {i}"),
            &got,
            &x.iter().map(|&v| reference::gelu(v)).collect::<Vec<_>>(),
            1e-6,
            1e-5,
        );
    }
    assert!(g.memory_stats().peak >= g.memory_stats().allocated);
    drop(_b);
    g.trim_pool();
}

#[test]
fn recorder_submits_one_pass_and_replays_records() {
    let g = gpu();
    let x = Rng::new(2).normals(1000, 1.0);
    let xt = upload(&x, &[1000], DType::F32, "x");
    let mut rec = Recorder::new(g);
    let a = ops::unary(&mut rec, &xt, Unary::Affine, 2.0, 1.0).unwrap();
    let b = ops::unary(&mut rec, &a, Unary::Affine, 0.5, -0.5).unwrap();
    assert_eq!(rec.len(), 2);
    // Dispatches are plain data: a plan executor can capture and re-run them.
    let captured: Vec<_> = rec.dispatches().to_vec();
    assert_eq!(captured[0].kernel.key.shader, "elementwise.wgsl");
    let d = rec.submit_timed().unwrap();
    assert!(d.as_nanos() > 0);
    check(
        "two chained dispatches",
        &b.to_vec(g).unwrap(),
        &x,
        1e-6,
        1e-6,
    );
}

/// Measures the loop-iteration cap of the adapter the tests run on (llvmpipe ends every loop
/// of an invocation once 65535 back-edges have run, counted over all its loops) and checks
/// that `Gpu::loop_iteration_limit` says what the device does: a 100000-iteration loop and a
/// second loop after it, counted into a buffer.
#[test]
fn the_loop_iteration_cap_is_what_the_device_does() {
    let gpu = gpu();
    let device = gpu.device();
    let src = "
        @group(0) @binding(0) var<storage, read_write> out: array<u32>;
        @compute @workgroup_size(1)
        fn main() {
            var a = 0u;
            for (var i = 0u; i < 100000u; i++) { a += 1u; }
            var b = 0u;
            for (var i = 0u; i < 10u; i++) { b += 1u; }
            out[0] = a;
            out[1] = b;
        }";
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("loop cap probe"),
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("loop cap probe"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let out = upload(&[0.0, 0.0], &[2], DType::F32, "counts");
    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: out.buffer().raw().as_entire_binding(),
        }],
    });
    let mut enc = device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
    gpu.queue().submit([enc.finish()]);
    let counts: Vec<u32> = out
        .to_vec(gpu)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let info = gpu.adapter_info();
    eprintln!(
        "loop cap probe on {} ({}): first loop ran {} of 100000, the second {} of 10; \
         engine assumes {:?}",
        info.name,
        info.driver_info,
        counts[0],
        counts[1],
        gpu.loop_iteration_limit()
    );
    match gpu.loop_iteration_limit() {
        Some(cap) => assert_eq!(
            counts[0], cap,
            "the cap the engine assumes is not the device's"
        ),
        None => assert_eq!(counts, [100000, 10], "an uncapped device capped a loop"),
    }
}
