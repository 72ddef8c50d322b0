//! Fuzzing on stable Rust: the engine's parsers of untrusted input as byte-level targets, a
//! seed corpus built from the repository's fixtures, and a mutator. The driver
//! (`examples/fuzz.rs`) runs millions of mutated inputs and watches for panics, hangs and
//! allocations over a cap; `tests/fuzz.rs` replays every input it ever kept
//! (`tests/fixtures/fuzz/`) and a short fixed-seed run on every `cargo test`.
//!
//! Targets (each parses the way the engine does, then runs what follows on success):
//! - `header`: a safetensors header (`weights::parse_header`), then, from its JSON as a
//!   shape map, the text tower, U-Net and VAE inference and every single-file rename table;
//! - `config`: JSON as a U-Net, VAE, CLIP and scheduler config (range checks included), then
//!   every sampler's schedule for several step counts;
//! - `yaml`: an LDM yaml with the alias/depth guard, against SD 1.5's real tensor shapes;
//! - `prompt`: the weighting parser and 75-token chunking with the CLIP tokenizer;
//! - `image`: the image reader (PNG, JPEG, WebP) with its pixel limit, then the crop;
//! - `npy`: the `.npy` reader.

use crate::models::arch::{
    Shapes, ldm_yaml_configs, load_yaml, text_from_shapes, unet_from_shapes, vae_from_shapes,
};
use crate::models::clip::ClipTextConfig;
use crate::models::unet::UNetConfig;
use crate::models::vae::AutoencoderKLConfig;
use crate::schedulers::{Sampler, SamplerKind, ScheduleConfig};
use crate::tokenizer::ClipTokenizer;
use crate::weights::single_file::{self, TextTower};
use std::path::Path;

/// A fuzz target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Header,
    Config,
    Yaml,
    Prompt,
    Image,
    Npy,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Header,
        Target::Config,
        Target::Yaml,
        Target::Prompt,
        Target::Image,
        Target::Npy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Header => "header",
            Target::Config => "config",
            Target::Yaml => "yaml",
            Target::Prompt => "prompt",
            Target::Image => "image",
            Target::Npy => "npy",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether inputs are text (the mutator then favours text tokens).
    pub fn is_text(self) -> bool {
        matches!(self, Target::Config | Target::Yaml | Target::Prompt)
    }
}

/// The pixel limit the `image` target reads with (small, so that a run stays fast).
pub const FUZZ_MAX_PIXELS: u64 = 1 << 20;

/// What the targets share: the tokenizer and SD 1.5's real tensor shapes.
pub struct Harness {
    tokenizer: ClipTokenizer,
    sd15: Shapes,
}

fn shapes_of(v: &serde_json::Value) -> Shapes {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, t)| {
                    let s = t.get("shape").unwrap_or(t).as_array()?;
                    let s: Option<Vec<usize>> =
                        s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect();
                    Some((k.clone(), s?))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Harness {
    /// `root`: the repository (for `tests/fixtures/ldm-headers.json`).
    pub fn new(root: &Path) -> crate::Result<Self> {
        let text = crate::files::read_text_limited(
            &root.join("tests/fixtures/ldm-headers.json"),
            64 << 20,
        )?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| crate::Error::unsupported("fuzz", format!("ldm-headers.json: {e}")))?;
        Ok(Self {
            tokenizer: ClipTokenizer::builtin()?,
            sd15: shapes_of(&v["sd15"]),
        })
    }

    /// Runs `target` on `bytes`; returns whether the input was accepted (the driver keeps
    /// accepted inputs as new seeds). A panic is a bug.
    pub fn run(&self, target: Target, bytes: &[u8]) -> bool {
        let path = Path::new("fuzz-input");
        match target {
            Target::Header => {
                let parsed = crate::weights::parse_header(path, bytes).is_ok();
                // The header's JSON as a shape map, as if its data were present.
                let json = bytes
                    .get(8..)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok());
                if let Some(v) = json {
                    self.infer(&shapes_of(&v));
                }
                parsed
            }
            Target::Config => {
                let Some(v) = std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
                else {
                    return false;
                };
                let mut ok = false;
                if let Ok(c) = UNetConfig::from_json(&v, path) {
                    ok |= c.check().is_ok();
                }
                if let Ok(c) = AutoencoderKLConfig::from_json(&v, path) {
                    ok |= c.check().is_ok();
                }
                if let Ok(c) = ClipTextConfig::from_json(&v, path) {
                    ok |= c.check().is_ok();
                }
                if let Ok(cfg) = ScheduleConfig::from_value(&v) {
                    ok = true;
                    schedules(&cfg);
                }
                ok
            }
            Target::Yaml => {
                let Ok(text) = std::str::from_utf8(bytes) else {
                    return false;
                };
                if load_yaml(text).is_err() {
                    return false;
                }
                match ldm_yaml_configs(text, path, &self.sd15, TextTower::Clip) {
                    Ok((text, unet, vae, scheduler)) => {
                        let _ = (text.check(), unet.check(), vae.check());
                        if let Ok(cfg) = ScheduleConfig::from_value(&scheduler) {
                            schedules(&cfg);
                        }
                        true
                    }
                    Err(_) => false,
                }
            }
            Target::Prompt => {
                let Ok(text) = std::str::from_utf8(bytes) else {
                    return false;
                };
                let weights = crate::prompt::parse_weights(text).is_ok();
                weights && crate::prompt::chunk_prompt(&self.tokenizer, text).is_ok()
            }
            Target::Image => match crate::imageio::decode_image_rgb(bytes, FUZZ_MAX_PIXELS) {
                Ok((w, h, rgb)) => {
                    let _ = crate::imageio::resize_to_multiple(
                        &rgb,
                        w,
                        h,
                        8,
                        crate::resample::Filter::Lanczos,
                    );
                    true
                }
                Err(_) => false,
            },
            Target::Npy => crate::npy::parse_f32(bytes, path).is_ok(),
        }
    }

    /// Architecture inference and renames from a checkpoint's shapes.
    fn infer(&self, shapes: &Shapes) {
        let path = Path::new("fuzz-input");
        let keys = || shapes.keys().map(String::as_str);
        for prefix in [single_file::CLIP_PREFIX, single_file::SGM_CLIP_PREFIX] {
            let _ = single_file::clip_renames(prefix, keys());
        }
        for prefix in [
            single_file::OPEN_CLIP_PREFIX,
            single_file::SGM_OPEN_CLIP_PREFIX,
        ] {
            let _ = single_file::open_clip_renames(prefix, keys());
        }
        let _ = single_file::vae_renames(single_file::VAE_PREFIX, keys());
        let _ = single_file::vae_renames("", keys());
        for lpb in [1, 2, 3] {
            let _ = single_file::unet_renames(keys(), lpb);
        }
        if let Ok(tower) = single_file::text_tower(path, shapes) {
            let sd2 = tower == TextTower::OpenClip;
            if let Ok(c) = text_from_shapes(path, shapes, tower.first(), sd2) {
                let _ = c.check();
            }
            if let Ok(a) = crate::models::arch::Architecture::infer(path, shapes, tower) {
                let _ = a.check(path);
            }
        }
        if let Ok(c) = unet_from_shapes(path, shapes, |c| c / 64) {
            let _ = c.check();
        }
        if let Ok(c) = vae_from_shapes(path, shapes) {
            let _ = c.check();
        }
    }

    /// Seed inputs for `target` from the repository's fixtures (and a few made here).
    pub fn seeds(&self, root: &Path, target: Target) -> Vec<Vec<u8>> {
        let fx = root.join("tests/fixtures");
        let mut files = Vec::new();
        walk(&fx, &mut files);
        files.sort();
        let read = |p: &Path| std::fs::read(p).ok();
        let ext = |p: &Path, e: &str| p.extension().is_some_and(|x| x == e);
        let mut out: Vec<Vec<u8>> = Vec::new();
        match target {
            Target::Header => {
                for p in files.iter().filter(|p| ext(p, "safetensors")) {
                    // The header alone, and a whole small file.
                    let Some(b) = read(p) else { continue };
                    if b.len() >= 8 {
                        let n = u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
                        if let Some(end) = usize::try_from(n).ok().and_then(|n| n.checked_add(8)) {
                            if end <= b.len() {
                                out.push(b[..end].to_vec());
                            }
                        }
                    }
                    if b.len() <= 64 << 10 {
                        out.push(b);
                    }
                }
                // SD 1.5's and SD 2.1's real key lists as headers (shapes only).
                if let Ok(t) = std::fs::read_to_string(fx.join("ldm-headers.json")) {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) {
                        for k in ["sd15", "sd21"] {
                            let j = v[k].to_string().into_bytes();
                            let mut h = (j.len() as u64).to_le_bytes().to_vec();
                            h.extend(j);
                            out.push(h);
                        }
                    }
                }
                let j = br#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"__metadata__":{"format":"pt"}}"#;
                let mut h = (j.len() as u64).to_le_bytes().to_vec();
                h.extend_from_slice(j);
                h.extend([0u8; 24]);
                out.push(h);
            }
            Target::Config => {
                for p in files.iter().filter(|p| ext(p, "json")) {
                    if p.file_name().is_some_and(|n| {
                        n.to_string_lossy().contains("config") || n == "model_index.json"
                    }) {
                        out.extend(read(p));
                    }
                }
            }
            Target::Yaml => {
                for p in files.iter().filter(|p| ext(p, "yaml")) {
                    out.extend(read(p));
                }
                out.push(b"a: &a [1, 2]\nb: &b [*a, *a]\nc: [*b, *b]\n".to_vec());
            }
            Target::Prompt => {
                for p in [
                    "a red sneaker on a white table",
                    "(masterpiece:1.2), [blurry], ((detailed)) \\(literal\\) cat",
                    "a cat 🐱 猫 חתול قطة",
                    "(a:0.5) (b:1.5) [[c]] (d)",
                    "",
                ] {
                    out.push(p.as_bytes().to_vec());
                }
            }
            Target::Image => {
                for p in files.iter().filter(|p| ext(p, "png")) {
                    if let Some(b) = read(p).filter(|b| b.len() <= 256 << 10) {
                        out.push(b);
                    }
                }
                let rgb: Vec<f32> = (0..6 * 5 * 3).map(|i| (i % 7) as f32 / 7.0).collect();
                use crate::imageio::ImageFormat as F;
                for f in [F::Png, F::Jpeg, F::WebP] {
                    out.extend(
                        crate::imageio::encode_image(f, &rgb, 6, 5, &[("parameters", "x")]).ok(),
                    );
                }
            }
            Target::Npy => {
                let p = Path::new("seed.npy");
                for shape in [vec![1, 4, 2, 3], vec![5], vec![0, 2]] {
                    let n: usize = shape.iter().product();
                    let v: Vec<f32> = (0..n).map(|i| i as f32 - 1.5).collect();
                    out.extend(crate::npy::encode_f32(p, &shape, &v).ok());
                }
            }
        }
        if out.is_empty() {
            out.push(Vec::new());
        }
        out
    }
}

/// Every sampler's schedule for a few step counts (where a bad config would index out of
/// range or divide by zero).
fn schedules(cfg: &ScheduleConfig) {
    let kinds = SamplerKind::ALL;
    for kind in kinds {
        for steps in [1, 4, 30] {
            if let Ok(mut s) = Sampler::<()>::new(kind, cfg, steps) {
                let _ = s.init_noise_sigma();
                let n = s.timesteps().len();
                for i in 0..n {
                    let _ = s.input_scale(i);
                    let _ = s.noise_coefficients(i);
                    let _ = s.needs_noise(i);
                }
                let k = s.start_index(0.6);
                let _ = s.begin_at(k);
            }
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// xorshift64*: the mutator's generator (reproducible from its seed).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

const TEXT_TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "<<: *a",
    "[",
    "]",
    "{",
    "}",
    ":",
    ",",
    "- ",
    "\n",
    "  ",
    "\"",
    "'",
    "(",
    ")",
    "\\",
    "nan",
    "NaN",
    "inf",
    "-inf",
    ".inf",
    "1e40",
    "-1",
    "0",
    "-0",
    "4294967296",
    "18446744073709551616",
    "99999999999999999999999",
    "1e-45",
    "null",
    "true",
    "1.5",
    "0x10",
    "!!binary ",
    "%YAML 1.2\n",
    "---\n",
    "...\n",
    "\u{feff}",
    "🐱",
    "\u{0}",
    ":1e40)",
    "(((",
    ")))",
    "\"_class_name\": \"FooScheduler\"",
    "\"sample_size\": 4294967296",
    "\"steps_offset\": 1000000",
    "\"norm_num_groups\": 0",
    "\"beta_end\": 2",
];

const NUMBERS: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    20000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    u64::MAX,
    1 << 62,
];

/// One mutated input from `input` (and another `seed` to splice from), at most `max_len`
/// bytes; PNG chunks get their CRCs repaired half of the time so that mutations reach past
/// the checksum.
pub fn mutate(
    rng: &mut Rng,
    target: Target,
    input: &[u8],
    other: &[u8],
    max_len: usize,
) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = v.len();
        let op = rng.below(11);
        match op {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = [0, 0xff, 0x7f, 0x80, b'0', b'9', b'-', b'.'][rng.below(8)];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                v.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                v.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(256));
                let chunk = v[i..i + n].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, chunk);
            }
            5 if !other.is_empty() => {
                let i = rng.below(len + 1);
                let j = rng.below(other.len());
                v.truncate(i);
                v.extend_from_slice(&other[j..]);
            }
            6 | 7 if target.is_text() => {
                let t = TEXT_TOKENS[rng.below(TEXT_TOKENS.len())].as_bytes();
                let i = rng.below(len + 1);
                if op == 6 || len == 0 {
                    v.splice(i..i, t.iter().copied());
                } else {
                    let end = (i + t.len()).min(len);
                    v.splice(i..end, t.iter().copied());
                }
            }
            6 | 7 if len >= 4 => {
                // An interesting number, 4 or 8 bytes, either byte order.
                let x = NUMBERS[rng.below(NUMBERS.len())];
                let bytes: Vec<u8> = match rng.below(4) {
                    0 => (x as u32).to_le_bytes().to_vec(),
                    1 => (x as u32).to_be_bytes().to_vec(),
                    2 => x.to_le_bytes().to_vec(),
                    _ => x.to_be_bytes().to_vec(),
                };
                let i = rng.below(len - bytes.len().min(len) + 1);
                let end = (i + bytes.len()).min(len);
                v.splice(i..end, bytes);
            }
            8 if len > 0 => v.truncate(rng.below(len)),
            9 if len > 0 => {
                // A digit run becomes an interesting number.
                let i = rng.below(len);
                if v[i].is_ascii_digit() {
                    let mut j = i;
                    while j < v.len() && v[j].is_ascii_digit() {
                        j += 1;
                    }
                    let x = NUMBERS[rng.below(NUMBERS.len())].to_string();
                    v.splice(i..j, x.into_bytes());
                }
            }
            _ => {
                let i = rng.below(len + 1);
                v.insert(i, rng.next_u64() as u8);
            }
        }
    }
    v.truncate(max_len);
    if target == Target::Image && rng.below(2) == 0 {
        fix_png_crcs(&mut v);
    }
    v
}

/// The PNG chunk CRC (CRC-32, polynomial 0xEDB88320).
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Recomputes the CRC of every whole chunk after the PNG signature.
fn fix_png_crcs(v: &mut [u8]) {
    let mut at = 8;
    while at + 12 <= v.len() {
        let n = u32::from_be_bytes([v[at], v[at + 1], v[at + 2], v[at + 3]]) as usize;
        let Some(end) = at.checked_add(8).and_then(|e| e.checked_add(n)) else {
            return;
        };
        if end + 4 > v.len() {
            return;
        }
        let c = crc32(&v[at + 4..end]).to_be_bytes();
        v[end..end + 4].copy_from_slice(&c);
        at = end + 4;
    }
}
