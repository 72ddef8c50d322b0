//! The ops a recorded step plan is built from — linear combinations with coefficients from a
//! device step table, inpainting's blend, copies, the step-aware non-finite flag — and the
//! device random fill of synthetic weights, against plain-loop references; and a captured
//! plan replayed with another table row selected gives that row's result.

use crate::common::*;
use sd_wgpu::gpu::Plan;
use sd_wgpu::ops::{self, StepTable};
use sd_wgpu::{DType, Recorder, reference};

fn rows() -> Vec<Vec<f32>> {
    vec![
        vec![0.5, -1.25, 2.0, 0.125, 3.0],
        vec![-0.75, 0.3, -2.5, 1.5, 0.0],
        vec![1.0, 1.0, 1.0, 1.0, 1.0],
    ]
}

#[test]
fn table_ops_match_reference_for_every_row() {
    let gpu = gpu();
    let table = StepTable::new(gpu, &rows()).unwrap();
    let mut rng = Rng::new(5);
    for shape in [&[2, 64, 64, 4][..], &[1, 8, 8, 4], &[7], &[1]] {
        let n: usize = shape.iter().product();
        let v: Vec<Vec<f32>> = (0..4).map(|_| rng.normals(n, 2.0)).collect();
        let t: Vec<_> = v
            .iter()
            .map(|x| upload(x, shape, DType::F32, "term"))
            .collect();
        let mask: Vec<f32> = (0..n).map(|i| (i % 3 == 0) as u8 as f32).collect();
        let mt = upload(&mask, shape, DType::F32, "mask");
        for (r, row) in rows().iter().enumerate() {
            table.set_row(gpu, r).unwrap();
            for k in 1..=4 {
                let cols = [4, 0, 2, 1];
                let terms: Vec<(usize, &sd_wgpu::Tensor)> =
                    (0..k).map(|i| (cols[i], &t[i])).collect();
                let want_terms: Vec<(usize, &[f32])> =
                    (0..k).map(|i| (cols[i], v[i].as_slice())).collect();
                for clamp in [None, Some(1.5f32)] {
                    let mut rec = Recorder::new(gpu);
                    let y = ops::table_combine(&mut rec, &table, &terms, clamp).unwrap();
                    let got = run(rec, &y);
                    let want = reference::table_combine(row, &want_terms, clamp);
                    check(
                        &format!("table_combine {shape:?} row {r} {k} terms clamp {clamp:?}"),
                        &got,
                        &want,
                        1e-6,
                        1e-6,
                    );
                }
            }
            let mut rec = Recorder::new(gpu);
            let y = ops::table_blend(&mut rec, &table, &t[0], &mt, &t[1], &t[2], [3, 1]).unwrap();
            let got = run(rec, &y);
            let want = reference::table_blend(&v[0], &mask, &v[1], &v[2], row[3], row[1]);
            check(
                &format!("table_blend {shape:?} row {r}"),
                &got,
                &want,
                1e-6,
                1e-6,
            );
        }
        let dst = upload(&vec![0.0; n], shape, DType::F32, "dst");
        let mut rec = Recorder::new(gpu);
        ops::copy_into(&mut rec, &table, &t[3], &dst).unwrap();
        rec.submit().unwrap();
        check("copy_into", &dst.to_vec(gpu).unwrap(), &v[3], 0.0, 0.0);
    }
    // Errors name what is wrong.
    let a = upload(&[1.0; 6], &[6], DType::F32, "a");
    let b = upload(&[1.0; 5], &[5], DType::F32, "b");
    let mut rec = Recorder::new(gpu);
    let e = ops::table_combine(&mut rec, &table, &[(0, &a), (1, &b)], None).unwrap_err();
    assert!(e.to_string().contains("differ in size"), "{e}");
    let e = ops::table_combine(&mut rec, &table, &[(5, &a)], None).unwrap_err();
    assert!(e.to_string().contains("coefficient 5"), "{e}");
    let e = ops::copy_into(&mut rec, &table, &a, &a).unwrap_err();
    assert!(e.to_string().contains("share a buffer"), "{e}");
    assert!(table.set_row(gpu, 3).is_err());
    assert!(StepTable::new(gpu, &[vec![1.0], vec![1.0, 2.0]]).is_err());
}

/// A plan captured once and replayed with each row selected by a copy in the encoder gives
/// each row's result; the step-aware flag records `code + row · stride` of the first row
/// whose input is non-finite.
#[test]
fn a_captured_plan_replays_each_row() {
    let gpu = gpu();
    let table = StepTable::new(gpu, &rows()).unwrap();
    let x = [1.0f32, -2.0, 0.5];
    let xt = upload(&x, &[3], DType::F32, "x");
    let acc = upload(&[0.0; 3], &[3], DType::F32, "acc");
    let flag = upload(&[f32::from_bits(u32::MAX)], &[1], DType::F32, "flag");
    // Rows 0..2: acc ← row[0]·x + row[1]·acc; a NaN check of acc with code 10, stride 2.
    let mut rec = Recorder::new(gpu);
    let y = ops::table_combine(&mut rec, &table, &[(0, &xt), (1, &acc)], None).unwrap();
    ops::copy_into(&mut rec, &table, &y, &acc).unwrap();
    ops::flag_nonfinite_step(&mut rec, &acc, &flag, 10, &table, 2).unwrap();
    drop(y);
    let plan = Plan::capture(&mut rec).unwrap();
    assert_eq!(plan.len(), 3);
    let mut enc = gpu.device().create_command_encoder(&Default::default());
    let mut want = vec![0.0f32; 3];
    for r in 0..3 {
        table.encode_select(&mut enc, r).unwrap();
        plan.encode(&mut enc);
        let row = &rows()[r];
        for i in 0..3 {
            want[i] = row[0] * x[i] + row[1] * want[i];
        }
    }
    gpu.queue().submit([enc.finish()]);
    check("plan replays", &acc.to_vec(gpu).unwrap(), &want, 1e-6, 1e-6);
    assert_eq!(flag.to_vec(gpu).unwrap()[0].to_bits(), u32::MAX);
    // A NaN from row 1 on: the flag holds 10 + 1·2.
    let nan = upload(&[f32::NAN; 3], &[3], DType::F32, "nan");
    let mut enc = gpu.device().create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(nan.buffer().raw(), 0, acc.buffer().raw(), 0, 12);
    for r in [1, 2] {
        table.encode_select(&mut enc, r).unwrap();
        plan.encode(&mut enc);
    }
    gpu.queue().submit([enc.finish()]);
    assert_eq!(flag.to_vec(gpu).unwrap()[0].to_bits(), 12);
}

#[test]
fn random_fill_matches_the_host_values() {
    let gpu = gpu();
    for (n, dtype) in [
        (4097usize, DType::F32),
        (4097, DType::F16),
        (1, DType::F16),
        (2, DType::F32),
    ] {
        let (key, scale, offset) = (0x1234_5678u32 ^ n as u32, 0.25f32, 0.5f32);
        let t = sd_wgpu::Tensor::empty(gpu, &[n], dtype, "w").unwrap();
        let mut rec = Recorder::new(gpu);
        ops::random_fill(&mut rec, &t, key, scale, offset).unwrap();
        let got = run(rec, &t);
        let want: Vec<f32> = (0..n as u32)
            .map(|i| ops::random::random_value(key, i, scale, offset))
            .collect();
        let want = if dtype == DType::F16 {
            round_f16(&want)
        } else {
            want
        };
        check(&format!("random_fill {n} {dtype:?}"), &got, &want, 0.0, 0.0);
        assert!(
            got.iter()
                .all(|v| (offset - scale..=offset + scale).contains(v))
        );
        if n > 1000 {
            let mean = got.iter().sum::<f32>() / n as f32;
            assert!((mean - offset).abs() < 0.02, "mean {mean}");
        }
    }
}
