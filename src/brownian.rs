//! The Brownian tree DPM++ SDE draws its noise from, reproducing torchsde's
//! `BrownianInterval(halfway_tree=True, tol=1e-6, pool_size=24)` as diffusers'
//! `BrownianTreeNoiseSampler` (and A1111 / k-diffusion) build it, so that a seed gives the
//! reference's noise:
//!
//! - the interval [t0, t1] is a dyadic tree: a query [ta, tb] splits leaves at their
//!   midpoints (rounded to 6 decimals, Python's `round(x, 6)`) until ta and tb are node
//!   edges, and the answer is the sum of the increments of the nodes covering [ta, tb];
//! - the root's increment is `randn(seed₀)·√(t1 − t0)`; a child's comes from its parent's by
//!   the Brownian bridge, `W_left = (l/h)·W + √(l·r/h)·randn(seed)`, `W_right = W − W_left`,
//!   where each node's seed is the first word of numpy's `SeedSequence(entropy,
//!   spawn_key=(key, depth), pool_size=24).generate_state(4)` and key is the node's path;
//! - `randn` is torch's CPU generator (`crate::rng::TorchGenerator`), in f32 as torch
//!   computes the bridge.
//!
//! Increments are recomputed from the nearest cached ancestor when they have left the
//! (bounded) cache, which gives the same numbers: every node's value depends only on its
//! parent's and its seed.

use crate::error::{Error, Result};
use crate::rng::TorchGenerator;
use std::collections::HashMap;

/// numpy's `SeedSequence` (O'Neill's seed_seq hash) with its pool of `pool` 32-bit words.
pub struct SeedSequence {
    pool: Vec<u32>,
}

const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;

/// A non-negative integer as numpy's `_int_to_uint32_array` writes it: 32-bit words, least
/// significant first, `[0]` for 0.
fn words(mut n: u128) -> Vec<u32> {
    if n == 0 {
        return vec![0];
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(n as u32);
        n >>= 32;
    }
    out
}

impl SeedSequence {
    pub fn new(entropy: u128, spawn_key: &[u128], pool: usize) -> Self {
        let mut run = words(entropy);
        let spawn: Vec<u32> = spawn_key.iter().flat_map(|&k| words(k)).collect();
        // numpy ≥ 1.19 pads the entropy to the pool size when there is a spawn key.
        if !spawn.is_empty() && run.len() < pool {
            run.resize(pool, 0);
        }
        run.extend(spawn);
        let mut hash = INIT_A;
        let mut hashmix = |value: u32| {
            let mut v = value ^ hash;
            hash = hash.wrapping_mul(MULT_A);
            v = v.wrapping_mul(hash);
            v ^ (v >> 16)
        };
        let mix = |x: u32, y: u32| {
            let r = MIX_MULT_L
                .wrapping_mul(x)
                .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
            r ^ (r >> 16)
        };
        let mut mixer: Vec<u32> = (0..pool)
            .map(|i| hashmix(run.get(i).copied().unwrap_or(0)))
            .collect();
        for src in 0..pool {
            for dst in 0..pool {
                if src != dst {
                    mixer[dst] = mix(mixer[dst], hashmix(mixer[src]));
                }
            }
        }
        for &word in run.iter().skip(pool) {
            for m in mixer.iter_mut() {
                *m = mix(*m, hashmix(word));
            }
        }
        Self { pool: mixer }
    }

    /// `generate_state(n)` as 32-bit words.
    pub fn generate_state(&self, n: usize) -> Vec<u32> {
        let mut hash = INIT_B;
        (0..n)
            .map(|i| {
                let mut v = self.pool[i % self.pool.len()] ^ hash;
                hash = hash.wrapping_mul(MULT_B);
                v = v.wrapping_mul(hash);
                v ^ (v >> 16)
            })
            .collect()
    }
}

/// Python's `round(x, 6)`: the double nearest the exact value rounded to 6 decimals.
fn round6(x: f64) -> f64 {
    // Rust formats the exact binary value, rounding half to even as Python's dtoa does.
    format!("{x:.6}").parse().unwrap_or(x)
}

struct Node {
    start: f64,
    end: f64,
    parent: Option<usize>,
    is_left: bool,
    /// Set once the node is split: the midpoint, the children, and the seed of the bridge
    /// noise that splits this node's increment between them.
    split: Option<Split>,
}

struct Split {
    midway: f64,
    children: [usize; 2],
    seed: u32,
    key: u128,
    depth: u32,
}

/// Nodes whose increments stay cached (torchsde keeps 45).
const CACHE: usize = 64;

pub struct BrownianTree {
    entropy: u128,
    numel: usize,
    nodes: Vec<Node>,
    root_w: Vec<f32>,
    cache: HashMap<usize, (Vec<f32>, u64)>,
    clock: u64,
}

impl BrownianTree {
    /// A tree over [t0, t1] for samples of `numel` values (the whole latent batch), seeded
    /// with `entropy` (diffusers' `noise_sampler_seed`; the engine passes the image seed).
    pub fn new(t0: f64, t1: f64, numel: usize, entropy: u128) -> Result<Self> {
        if !(t0.is_finite() && t1.is_finite() && t0 < t1) || numel == 0 {
            return Err(Error::unsupported(
                "Brownian tree",
                format!("interval [{t0}, {t1}] over {numel} values"),
            ));
        }
        let seeds = SeedSequence::new(entropy, &[], 24).generate_state(3);
        let scale = (t1 - t0).sqrt() as f32;
        let root_w = TorchGenerator::new(u64::from(seeds[0]))
            .randn(numel)
            .into_iter()
            .map(|v| v * scale)
            .collect();
        Ok(Self {
            entropy,
            numel,
            nodes: vec![Node {
                start: round6(t0),
                end: round6(t1),
                parent: None,
                is_left: false,
                split: None,
            }],
            root_w,
            cache: HashMap::new(),
            clock: 0,
        })
    }

    /// `W(tb) − W(ta)` for ta ≤ tb (clamped to the tree's interval, as torchsde clamps).
    pub fn increment(&mut self, ta: f64, tb: f64) -> Result<Vec<f32>> {
        let (lo, hi) = (self.nodes[0].start, self.nodes[0].end);
        let ta = round6(ta.clamp(lo, hi));
        let tb = round6(tb.clamp(lo, hi));
        if ta > tb {
            return Err(Error::unsupported(
                "Brownian tree",
                format!("query [{ta}, {tb}] runs backwards"),
            ));
        }
        if ta == tb {
            return Ok(vec![0.0; self.numel]);
        }
        let mut out = Vec::new();
        self.locate(0, ta, tb, &mut out);
        let mut w = self.w(out[0]);
        for &n in &out[1..] {
            let wi = self.w(n);
            for (a, b) in w.iter_mut().zip(&wi) {
                *a += b;
            }
        }
        Ok(w)
    }

    /// diffusers' `BrownianTreeNoiseSampler(σ, σ')`: the increment between the two σ over the
    /// square root of their distance, oriented from σ to σ' (f32, as torch computes it).
    pub fn noise(&mut self, sigma: f32, next: f32) -> Result<Vec<f32>> {
        let (a, b, sign) = if sigma < next {
            (sigma, next, 1.0f32)
        } else {
            (next, sigma, -1.0)
        };
        let w = self.increment(f64::from(a), f64::from(b))?;
        let norm = (next - sigma).abs().sqrt();
        Ok(w.into_iter().map(|v| v * sign / norm).collect())
    }

    /// torchsde's `_loc_inner` from the root: the existing or newly split nodes covering
    /// [ta, tb], in order.
    fn locate(&mut self, node: usize, ta: f64, tb: f64, out: &mut Vec<usize>) {
        let (start, end) = (self.nodes[node].start, self.nodes[node].end);
        if ta == start && tb == end {
            out.push(node);
            return;
        }
        let (midway, [left, right]) = match &self.nodes[node].split {
            Some(s) => (s.midway, s.children),
            None => {
                self.split(node, if ta == start { tb } else { ta });
                return self.locate(node, ta, tb, out);
            }
        };
        if tb <= midway {
            self.locate(left, ta, tb, out);
        } else if ta >= midway {
            self.locate(right, ta, tb, out);
        } else {
            self.locate(left, ta, midway, out);
            self.locate(right, midway, tb, out);
        }
    }

    /// torchsde's `_split` of a halfway tree: split at the (rounded) midpoint, then the child
    /// holding `target` again, until `target` is a midpoint.
    fn split(&mut self, node: usize, target: f64) {
        let (start, end) = (self.nodes[node].start, self.nodes[node].end);
        let half = 0.5 * (end + start);
        let (key, depth) = match self.nodes[node].parent {
            None => (0, 0),
            Some(p) => {
                let s = self.nodes[p].split.as_ref().expect("a parent is split");
                (
                    2 * s.key + u128::from(!self.nodes[node].is_left),
                    s.depth + 1,
                )
            }
        };
        let seed =
            SeedSequence::new(self.entropy, &[key, u128::from(depth)], 24).generate_state(4)[0];
        let first = self.nodes.len();
        for (is_left, (a, b)) in [(true, (start, half)), (false, (half, end))] {
            self.nodes.push(Node {
                start: round6(a),
                end: round6(b),
                parent: Some(node),
                is_left,
                split: None,
            });
        }
        let midway = round6(half);
        self.nodes[node].split = Some(Split {
            midway,
            children: [first, first + 1],
            seed,
            key,
            depth,
        });
        if target > midway {
            self.split(first + 1, target);
        } else if target < midway {
            self.split(first, target);
        }
    }

    /// A node's increment: the root's, a cached one, or its parent's bridged.
    fn w(&mut self, node: usize) -> Vec<f32> {
        self.clock += 1;
        let Some(p) = self.nodes[node].parent else {
            return self.root_w.clone();
        };
        if let Some((w, used)) = self.cache.get_mut(&node) {
            *used = self.clock;
            return w.clone();
        }
        let parent_w = self.w(p);
        let pn = &self.nodes[p];
        let s = pn.split.as_ref().expect("a parent is split");
        let h_reciprocal = 1.0 / (pn.end - pn.start);
        let (l, r) = (s.midway - pn.start, pn.end - s.midway);
        let noise = TorchGenerator::new(u64::from(s.seed)).randn(self.numel);
        let (lf, hf) = (l as f32, h_reciprocal as f32);
        let sd = (l * r * h_reciprocal).sqrt() as f32;
        let left = self.nodes[node].is_left;
        let w: Vec<f32> = parent_w
            .iter()
            .zip(&noise)
            .map(|(&pw, &z)| {
                let left_w = lf * pw * hf + sd * z;
                if left { left_w } else { pw - left_w }
            })
            .collect();
        if self.cache.len() >= CACHE {
            if let Some(&old) = self
                .cache
                .iter()
                .min_by_key(|(_, (_, u))| *u)
                .map(|(k, _)| k)
            {
                self.cache.remove(&old);
            }
        }
        self.cache.insert(node, (w.clone(), self.clock));
        w
    }
}
