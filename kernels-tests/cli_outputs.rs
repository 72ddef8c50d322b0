//! The CLI's outputs: every output path is checked before any work, files appear whole or
//! not at all (written to a temporary name and linked into place), and existing files are
//! kept unless `--overwrite`.

use crate::hardening::fixture;
use std::path::{Path, PathBuf};

fn cli(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
        .arg("generate")
        .arg("--model")
        .arg(fixture("sd1-tiny"))
        .args(["--steps", "2", "--width", "32", "--height", "32"])
        .args(args)
        .output()
        .unwrap()
}

macro_rules! os {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new($a)),*] };
}

/// The CLI's outputs: Unicode prompts in iTXt / EXIF, nothing replaced or followed, every
/// output path checked before the model is even loaded, all or nothing.
#[test]
fn cli_outputs_are_atomic_and_checked_first() {
    let dir = std::env::temp_dir().join(format!("sd-wgpu-hard-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let prompt = "a cat 🐱 猫 חתול قطة";
    let (png, jpg) = (d("u.png"), d("u.jpg"));
    for out in [&png, &jpg] {
        let r = cli(os![
            "--prompt",
            prompt,
            "--negative-prompt",
            "日本",
            "--out",
            out
        ]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let reader = dec.read_info().unwrap();
    let params = reader.info().utf8_text[0].get_text().unwrap();
    assert!(
        params.starts_with(&format!("{prompt}\nNegative prompt: 日本\nSteps: 2, ")),
        "{params}"
    );
    let bytes = std::fs::read(&jpg).unwrap();
    assert_eq!(&bytes[..2], b"\xff\xd8", "not a JPEG");
    let img = image::load_from_memory(&bytes).unwrap();
    assert_eq!((img.width(), img.height()), (32, 32));
    let utf16: Vec<u8> = prompt.encode_utf16().flat_map(u16::to_be_bytes).collect();
    assert!(
        bytes.windows(utf16.len()).any(|w| w == utf16),
        "no EXIF UserComment"
    );

    // An existing file: refused before loading, and untouched.
    std::fs::write(&png, b"precious").unwrap();
    let r = cli(os!["--prompt", "x", "--out", &png]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("already exists"),
        "{err}"
    );
    assert!(!err.contains("loaded"), "checked after loading: {err}");
    assert_eq!(std::fs::read(&png).unwrap(), b"precious");
    // Batch names too: the second numbered name exists.
    std::fs::write(d("b-001.png"), b"precious").unwrap();
    let r = cli(os![
        "--prompt",
        "x",
        "--batch-size",
        "2",
        "--out",
        &d("b.png")
    ]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("b-001.png"));
    assert!(!dir.join("b-000.png").exists());
    // A symbolic link is never written through, even with --overwrite.
    #[cfg(unix)]
    {
        let link = d("link.png");
        std::os::unix::fs::symlink(&png, &link).unwrap();
        let r = cli(os!["--prompt", "x", "--out", &link, "--overwrite"]);
        assert!(String::from_utf8_lossy(&r.stderr).contains("symbolic link"));
        assert_eq!(std::fs::read(&png).unwrap(), b"precious");
    }
    // --overwrite replaces a regular file.
    let r = cli(os!["--prompt", "x", "--out", &png, "--overwrite"]);
    assert!(r.status.success());
    assert_ne!(std::fs::read(&png).unwrap(), b"precious");
    // A missing folder for --latents-out: refused first, no image written.
    let r = cli(os![
        "--prompt",
        "x",
        "--out",
        &d("l.png"),
        "--latents-out",
        &d("missing/l.npy")
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("does not exist") && err.contains("writing"),
        "{err}"
    );
    assert!(!dir.join("l.png").exists());
    // Unknown formats, flags without their partner, counts and seeds out of range.
    for (args, want) in [
        (vec!["--out", "x.bmp"], "unknown image format `.bmp`"),
        (vec!["--strength", "0.5"], "--strength needs --init-image"),
        (vec!["--noise", "n.npy"], "--noise needs --init-image"),
        (vec!["--batch-count", "0"], "0 is not in 1..=100000"),
        (
            vec!["--seed", "18446744073709551615", "--batch-count", "2"],
            "would pass 2^64 - 1",
        ),
        (vec!["--guidance", "inf"], "`guidance` is inf"),
    ] {
        let mut a: Vec<&std::ffi::OsStr> = os!["--prompt", "x"].to_vec();
        let out = d("never.png");
        if args[0] != "--out" {
            a.extend(os!["--out", &out]);
        }
        a.extend(args.iter().map(std::ffi::OsStr::new));
        let r = cli(&a);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success() && err.contains(want), "{args:?}: {err}");
        assert!(!dir.join("never.png").exists());
    }
    // A 20000 x 20000 PNG as init image: refused from its header, naming the limit.
    let big = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz/image-png-20000x20000.bin");
    let init = d("big.png");
    std::fs::copy(big, &init).unwrap();
    let r = cli(os![
        "--prompt",
        "x",
        "--out",
        &d("i.png"),
        "--init-image",
        &init
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("20000x20000") && err.contains("--max-image-pixels"),
        "{err}"
    );
    // --noise is checked against [batch, out_channels, h, w] by the library's shape: a batch
    // of 2 takes a [2, 4, 8, 8] array.
    let noise = d("noise.npy");
    sd_wgpu::npy::write_f32(Path::new(&noise), &[2, 4, 8, 8], &[0.1; 512]).unwrap();
    let input = fixture("img2img-input.png");
    let r = cli(os![
        "--prompt",
        "x",
        "--out",
        &d("n.png"),
        "--init-image",
        input.to_str().unwrap(),
        "--noise",
        &noise,
        "--batch-size",
        "2"
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(dir.join("n-000.png").exists() && dir.join("n-001.png").exists());
    // No temporary files are left behind by any of the above.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("sd-wgpu-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// On/off switches from the environment: `sd-wgpu info` reports them, and a value other than
/// `1` or `0` is an error naming the variable, never treated as unset.
#[test]
fn environment_switches_are_reported_and_checked() {
    let info = |var: &str, val: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
            .arg("info")
            .env(var, val)
            .output()
            .unwrap()
    };
    for var in [
        "SD_WGPU_WINOGRAD",
        "SD_WGPU_F16_ACTIVATIONS",
        "SD_WGPU_LOAD64",
    ] {
        let r = info(var, "maybe");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            !r.status.success() && err.contains(var) && err.contains("1 or 0"),
            "{err}"
        );
    }
    // lavapipe (CI's adapter) takes the subgroup GEMM core, where Winograd and (with its
    // shader-int64) the 64-bit loads are the default.
    for (var, what) in [
        ("SD_WGPU_WINOGRAD", "Winograd"),
        ("SD_WGPU_LOAD64", "64-bit operand loads"),
    ] {
        let line = |r: &std::process::Output| {
            String::from_utf8_lossy(&r.stdout)
                .lines()
                .find(|l| l.contains(what))
                .map(str::to_owned)
                .unwrap_or_default()
        };
        let off = info(var, "0");
        assert!(
            off.status.success() && line(&off).contains(" off "),
            "{}",
            line(&off)
        );
        let on = info(var, "");
        assert!(
            on.status.success() && line(&on).contains(" on "),
            "{}",
            line(&on)
        );
    }
}
