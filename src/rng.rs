//! A small deterministic random source: SplitMix64 with Box–Muller normals. The same stream
//! on every platform; used for seeded noise (not torch's mt19937 stream), test data and
//! benchmarks.

pub struct SplitMix64(u64);

impl SplitMix64 {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(Self::GOLDEN) ^ 0xD1B5_4A32_D192_ED03)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::GOLDEN);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One standard normal sample (Box–Muller, the cosine branch).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// `n` samples of N(0, std²).
    pub fn normals(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * std).collect()
    }
}

/// torch's CPU generator (`torch.Generator("cpu").manual_seed(seed)`) and its float32
/// `randn`, so that a seed gives the same initial latents and step noise as diffusers:
/// MT19937 seeded with the low 32 bits; `randn` of n ≥ 16 values draws n uniform floats
/// (24 random bits each), turns each block of 16 into normals by Box–Muller (the first 8
/// as `u1`, the last 8 as `u2`) and, when n is not a multiple of 16, redraws the last 16;
/// fewer than 16 values use torch's double-precision path, one pair of 53-bit uniforms
/// per two normals with the second cached (ATen `normal_fill` / `normal_distribution`).
pub struct TorchGenerator {
    state: [u32; 624],
    index: usize,
    next_normal: Option<f64>,
}

impl TorchGenerator {
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed as u32;
        for j in 1..624 {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Self {
            state,
            index: 624,
            next_normal: None,
        }
    }

    /// The next 32-bit output of MT19937.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for k in 0..624 {
                let y = (self.state[k] & 0x8000_0000) | (self.state[(k + 1) % 624] & 0x7fff_ffff);
                let mut v = self.state[(k + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.state[k] = v;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `torch.rand` float32: 24 random bits over 2^24.
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & 0x00ff_ffff) as f32 / 16_777_216.0
    }

    fn uniform_f64(&mut self) -> f64 {
        let (hi, lo) = (self.next_u32(), self.next_u32());
        let v = (u64::from(hi) << 32) | u64::from(lo);
        (v & ((1u64 << 53) - 1)) as f64 / (1u64 << 53) as f64
    }

    /// `torch.randn(n, generator=g)` in float32.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for i in (0..n - 15).step_by(16) {
            normal_fill_16(&mut data[i..i + 16]);
        }
        if n % 16 != 0 {
            for v in &mut data[n - 16..] {
                *v = self.uniform_f32();
            }
            normal_fill_16(&mut data[n - 16..]);
        }
        data
    }

    fn normal_f64(&mut self) -> f64 {
        if let Some(v) = self.next_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_normal = Some(r * theta.sin());
        r * theta.cos()
    }
}

/// ATen's `normal_fill_16` (float): Box–Muller on 8 pairs.
fn normal_fill_16(d: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - d[j];
        let u2 = d[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = (2.0 * std::f64::consts::PI * f64::from(u2)) as f32;
        d[j] = radius * theta.cos();
        d[j + 8] = radius * theta.sin();
    }
}
