//! torch's CPU `randn` reproduced (`tests/fixtures/torch_randn.json`, made by
//! `tools/dump_torch_randn.py`): seeds give the same noise as diffusers.

use sd_wgpu::rng::TorchGenerator;
use serde_json::Value;

#[test]
fn torch_randn_is_reproduced_for_every_size_path() {
    let v: Value = serde_json::from_str(include_str!("fixtures/torch_randn.json")).unwrap();
    let mut worst = 0.0f64;
    for case in v["cases"].as_array().unwrap() {
        let seed = case["seed"].as_u64().unwrap();
        let mut g = TorchGenerator::new(seed);
        // Consecutive draws from one generator, as diffusers' per-step noise is.
        for (n, want) in case["sizes"]
            .as_array()
            .unwrap()
            .iter()
            .zip(case["randn"].as_array().unwrap())
        {
            let got = g.randn(n.as_u64().unwrap() as usize);
            let want: Vec<f64> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let err = (f64::from(*g) - w).abs();
                worst = worst.max(err);
                assert!(
                    err <= 1e-6 + 1e-6 * w.abs(),
                    "seed {seed}, n {n}, element {i}: {g} vs torch {w}"
                );
            }
        }
    }
    eprintln!("max |randn - torch| = {worst:.2e}");
    let mut g = TorchGenerator::new(7);
    for (i, w) in v["rand_seed7"].as_array().unwrap().iter().enumerate() {
        // Exact: torch.rand's floats are 24-bit fractions (compared as f32, since the JSON
        // parser may be an ulp off in f64).
        assert_eq!(
            g.uniform_f32(),
            w.as_f64().unwrap() as f32,
            "torch.rand element {i}"
        );
    }
}
