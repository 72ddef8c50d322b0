use sd_wgpu::ops::{self, Conv2dOptions};
use sd_wgpu::{DType, Gpu, Recorder, Tensor};
// conv_ab VAR VALA VALB n h w cin cout k
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = Gpu::new()?;
    let mut rng = sd_wgpu::rng::SplitMix64::new(7);
    let a: Vec<String> = std::env::args().skip(1).collect();
    let var = a[0].clone();
    let vals = [a[1].clone(), a[2].clone()];
    let n: Vec<usize> = a[3..].iter().map(|x| x.parse().unwrap()).collect();
    let (b, h, w, cin, cout, k) = (n[0], n[1], n[2], n[3], n[4], n[5]);
    let x = Tensor::from_f32(
        &gpu,
        &rng.normals(b * h * w * cin, 1.0),
        &[b, h, w, cin],
        DType::F32,
        "x",
    )?;
    let wt = Tensor::from_f32(
        &gpu,
        &rng.normals(k * k * cin * cout, 0.1),
        &[k, k, cin, cout],
        DType::F32,
        "w",
    )?;
    let opts = Conv2dOptions::new(1, k / 2);
    let flop = 2.0 * (b * h * w * cout * k * k * cin) as f64;
    let reps = (3e8 / flop).clamp(1.0, 50.0) as usize;
    let mut res: [Vec<f64>; 2] = [vec![], vec![]];
    for round in 0..10 {
        for j in 0..2 {
            let i = if round % 2 == 0 { j } else { 1 - j };
            let val = &vals[i];
            if val == "-" {
                unsafe { std::env::remove_var(&var) }
            } else {
                unsafe { std::env::set_var(&var, val) }
            }
            let mut rec = Recorder::new(&gpu);
            drop(ops::conv2d(&mut rec, &x, &wt, None, None, opts)?);
            rec.submit_timed()?;
            let mut rec = Recorder::new(&gpu);
            for _ in 0..reps {
                drop(ops::conv2d(&mut rec, &x, &wt, None, None, opts)?);
            }
            let s = rec.submit_timed()?.as_secs_f64() / reps as f64;
            res[i].push(flop / s / 1e9);
        }
    }
    for i in 0..2 {
        let mut r = res[i].clone();
        r.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{}={}: median {:.1} max {:.1} GFLOP/s",
            var,
            vals[i],
            r[r.len() / 2],
            r[r.len() - 1]
        );
    }
    let mut ratios: Vec<f64> = res[0].iter().zip(&res[1]).map(|(a, b)| b / a).collect();
    ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "B/A per round: median {:.3} range {:.3}..{:.3}",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    Ok(())
}
