//! The fuzz targets (`sd_wgpu::fuzz`, driven at scale by `examples/fuzz.rs`) on every
//! `cargo test`, no GPU needed: every input kept in `tests/fixtures/fuzz/` (the issue's
//! hostile inputs and whatever the fuzzer ever found) is replayed, the known-hostile ones with
//! their expected errors, and a short fixed-seed mutation run per target must not panic.

use sd_wgpu::fuzz::{Harness, Rng, Target, mutate};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn harness() -> Harness {
    Harness::new(&root()).unwrap()
}

/// Runs one input, turning a panic into a failure that names the input.
fn run_or_fail(h: &Harness, t: Target, bytes: &[u8], what: &str) -> bool {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.run(t, bytes))) {
        Ok(accepted) => accepted,
        Err(_) => {
            let p = std::env::temp_dir().join(format!("sd-wgpu-fuzz-{}-fail.bin", t.name()));
            let _ = std::fs::write(&p, bytes);
            panic!(
                "{} panicked on {what} (input saved to {})",
                t.name(),
                p.display()
            );
        }
    }
}

#[test]
fn every_kept_input_replays_without_panic() {
    let h = harness();
    let dir = root().join("tests/fixtures/fuzz");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(t) = name.split('-').next().and_then(Target::from_name) else {
            panic!("{name}: kept inputs are named <target>-<what>.bin");
        };
        let bytes = std::fs::read(&p).unwrap();
        let t0 = std::time::Instant::now();
        run_or_fail(&h, t, &bytes, &name);
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "{name}: {:?}",
            t0.elapsed()
        );
        n += 1;
    }
    assert!(n >= 11, "only {n} kept inputs");
}

fn kept(name: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/fixtures/fuzz").join(name)).unwrap()
}

/// The hostile inputs of the hardening issue get their typed errors, quickly and in bounded
/// memory.
#[test]
fn hostile_inputs_get_typed_errors() {
    let p = Path::new("x");
    let text = |n: &str| String::from_utf8(kept(n)).unwrap();
    // A 342-byte alias bomb (9^9 scalars expanded) and 5000-deep nesting.
    let e = sd_wgpu::models::arch::load_yaml(&text("yaml-alias-bomb.bin")).unwrap_err();
    assert!(e.contains("more than 100000 nodes"), "{e}");
    // (yaml-rust2's own recursion limit or ours, whichever the parser reaches first.)
    let e = sd_wgpu::models::arch::load_yaml(&text("yaml-deep-nesting.bin")).unwrap_err();
    assert!(
        e.contains("deeper than 64") || e.contains("recursion limit"),
        "{e}"
    );
    let nested = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let e = sd_wgpu::models::arch::load_yaml(&nested).unwrap_err();
    assert!(e.contains("deeper than 64"), "{e}");
    // Beside a checkpoint, as `<stem>.yaml`, the same refusal names the file.
    let dir = std::env::temp_dir().join(format!("sd-wgpu-fuzz-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let y = dir.join("model.yaml");
    std::fs::write(&y, kept("yaml-alias-bomb.bin")).unwrap();
    let e = sd_wgpu::models::arch::Architecture::from_ldm_yaml(
        &y,
        &Default::default(),
        sd_wgpu::weights::single_file::TextTower::Clip,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("model.yaml") && e.contains("100000 nodes"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    // A 20000x20000 PNG of 74 bytes: refused from its header.
    let e = sd_wgpu::imageio::decode_image_rgb(&kept("image-png-20000x20000.bin"), 1 << 24)
        .unwrap_err();
    assert!(e.to_string().contains("20000x20000"), "{e}");
    let e = sd_wgpu::npy::parse_f32(&kept("npy-huge-shape.bin"), p).unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");
    let v: serde_json::Value = serde_json::from_slice(&kept("config-sample-size.bin")).unwrap();
    let c = sd_wgpu::models::unet::UNetConfig::from_json(&v, p).unwrap();
    assert!(
        c.check()
            .unwrap_err()
            .contains("`sample_size` = 4294967296")
    );
    let e = sd_wgpu::schedulers::ScheduleConfig::from_json(&text("config-steps-offset.bin"))
        .unwrap_err();
    assert!(e.to_string().contains("`steps_offset` = 1000000"), "{e}");
    let e = sd_wgpu::prompt::parse_weights(&text("prompt-deep-nesting.bin")).unwrap_err();
    assert!(e.to_string().contains("deeper than 64"), "{e}");
    let e = sd_wgpu::prompt::parse_weights(&text("prompt-huge-weight.bin")).unwrap_err();
    assert!(e.to_string().contains("1e40"), "{e}");
    let e = sd_wgpu::weights::parse_header(p, &kept("header-huge-length.bin")).unwrap_err();
    assert!(e.to_string().contains("not a valid safetensors"), "{e}");
}

/// A short fixed-seed run per target: mutated seeds, no panic.
#[test]
fn short_fuzz_run_finds_no_panic() {
    let h = harness();
    for t in Target::ALL {
        let seeds = h.seeds(&root(), t);
        assert!(!seeds.is_empty());
        let mut rng = Rng::new(42);
        let mut accepted = 0;
        for k in 0..1500 {
            let a = &seeds[rng.below(seeds.len())];
            let b = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, t, a, b, 1 << 16);
            accepted += usize::from(run_or_fail(&h, t, &input, &format!("mutation {k}")));
        }
        // The seeds themselves parse: the run explores past the first byte.
        assert!(
            seeds.iter().any(|s| h.run(t, s)),
            "{}: no seed is accepted",
            t.name()
        );
        eprintln!("{}: 1500 mutations, {accepted} accepted", t.name());
    }
}
