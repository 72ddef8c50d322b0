//! The Brownian tree against diffusers' `BrownianTreeNoiseSampler` (torchsde) and numpy's
//! `SeedSequence`: `tools/dump_brownian_fixture.py`.

use sd_wgpu::brownian::{BrownianTree, SeedSequence};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/brownian.json")).unwrap()
}

#[test]
fn seed_sequence_matches_numpy() {
    for s in fixture()["seed_sequences"].as_array().unwrap() {
        let key: Vec<u128> = s["spawn_key"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| u128::from(k.as_u64().unwrap()))
            .collect();
        let e = u128::from(s["entropy"].as_u64().unwrap());
        let want: Vec<u32> = s["state"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            SeedSequence::new(e, &key, 24).generate_state(4),
            want,
            "{s}"
        );
    }
}

/// Every query of every case, in the dump's order, to 1e-6 relative (the tree's arithmetic is
/// torch's f32 arithmetic; the worst element is reported).
#[test]
fn brownian_noise_matches_torchsde() {
    for c in fixture()["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let numel: usize = c["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .product();
        let mut tree = BrownianTree::new(
            c["sigma_min"].as_f64().unwrap(),
            c["sigma_max"].as_f64().unwrap(),
            numel,
            u128::from(c["seed"].as_u64().unwrap()),
        )
        .unwrap();
        let mut worst = 0.0f64;
        for (k, q) in c["queries"].as_array().unwrap().iter().enumerate() {
            let got = tree
                .noise(
                    q["sigma"].as_f64().unwrap() as f32,
                    q["next"].as_f64().unwrap() as f32,
                )
                .unwrap();
            let want = q["noise"].as_array().unwrap();
            assert_eq!(got.len(), want.len(), "{name}: query {k}");
            for (e, (g, w)) in got.iter().zip(want).enumerate() {
                let (g, w) = (f64::from(*g), w.as_f64().unwrap());
                let err = (g - w).abs();
                assert!(
                    err <= 1e-6 * (1.0 + w.abs()),
                    "{name}: query {k} element {e}: {g} vs torchsde {w}"
                );
                worst = worst.max(err);
            }
        }
        eprintln!("{name}: worst |noise − torchsde| = {worst:.2e}");
    }
}

#[test]
fn bad_trees_and_queries_are_errors() {
    assert!(BrownianTree::new(1.0, 1.0, 4, 0).is_err());
    assert!(BrownianTree::new(2.0, 1.0, 4, 0).is_err());
    assert!(BrownianTree::new(0.0, f64::NAN, 4, 0).is_err());
    assert!(BrownianTree::new(0.0, 1.0, 0, 0).is_err());
    let mut t = BrownianTree::new(0.0, 1.0, 4, 0).unwrap();
    assert!(t.increment(0.7, 0.2).is_err());
    assert_eq!(t.increment(0.3, 0.3).unwrap(), vec![0.0; 4]);
}
