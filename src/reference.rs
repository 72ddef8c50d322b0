//! Plain-loop CPU references of every GPU op, in the kernels' layouts (channels-last), each
//! matching the PyTorch / diffusers function named in its doc line. Accumulation is f64
//! where a sum is long, so the reference is more accurate than the kernel it checks.

/// `torch.matmul(a, b) + bias`: `a` `[batch, m, k]`, `b` `[batch_b, k, n]` with `batch_b` 1
/// (broadcast) or `batch`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    b_batched: bool,
) -> Vec<f32> {
    let mut c = vec![0.0f32; batch * m * n];
    let mut row = vec![0.0f64; n];
    for bi in 0..batch {
        let bb = if b_batched {
            &b[bi * k * n..(bi + 1) * k * n]
        } else {
            &b[..k * n]
        };
        for i in 0..m {
            row.iter_mut().for_each(|r| *r = 0.0);
            let ar = &a[(bi * m + i) * k..(bi * m + i + 1) * k];
            for (kk, &av) in ar.iter().enumerate() {
                let av = f64::from(av);
                for (r, &bv) in row.iter_mut().zip(&bb[kk * n..(kk + 1) * n]) {
                    *r += av * f64::from(bv);
                }
            }
            for j in 0..n {
                c[(bi * m + i) * n + j] = (row[j] + bias.map_or(0.0, |b| f64::from(b[j]))) as f32;
            }
        }
    }
    c
}

/// `torch.nn.functional.conv2d(x, w, bias, stride, padding)` (+ residual), channels-last
/// `x` `[n, h, w, cin]`, `w` `[kh, kw, cin, cout]`, padding (top, bottom, left, right).
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f32],
    [n, h, w, cin]: [usize; 4],
    wt: &[f32],
    [kh, kw, cout]: [usize; 3],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    stride: usize,
    [pt, pb, pl, pr]: [usize; 4],
) -> (Vec<f32>, [usize; 4]) {
    let ho = (h + pt + pb - kh) / stride + 1;
    let wo = (w + pl + pr - kw) / stride + 1;
    let mut out = vec![0.0f32; n * ho * wo * cout];
    let mut acc = vec![0.0f64; cout];
    for b in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                acc.iter_mut().for_each(|a| *a = 0.0);
                for ky in 0..kh {
                    let iy = (oy * stride + ky) as isize - pt as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..kw {
                        let ix = (ox * stride + kx) as isize - pl as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let xi = ((b * h + iy as usize) * w + ix as usize) * cin;
                        for ci in 0..cin {
                            let xv = f64::from(x[xi + ci]);
                            let wr = &wt[((ky * kw + kx) * cin + ci) * cout..][..cout];
                            for (a, &wv) in acc.iter_mut().zip(wr) {
                                *a += xv * f64::from(wv);
                            }
                        }
                    }
                }
                let oi = ((b * ho + oy) * wo + ox) * cout;
                for co in 0..cout {
                    let mut v = acc[co] + bias.map_or(0.0, |bs| f64::from(bs[co]));
                    if let Some(r) = residual {
                        v += f64::from(r[oi + co]);
                    }
                    out[oi + co] = v as f32;
                }
            }
        }
    }
    (out, [n, ho, wo, cout])
}

/// `torch.nn.functional.group_norm(x, groups, gamma, beta, eps)` (then `silu`) on
/// channels-last `x` `[n, hw, c]`.
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    x: &[f32],
    n: usize,
    hw: usize,
    c: usize,
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    silu: bool,
) -> Vec<f32> {
    let cg = c / groups;
    let mut y = vec![0.0f32; x.len()];
    for b in 0..n {
        for g in 0..groups {
            let idx = |p: usize, cc: usize| (b * hw + p) * c + g * cg + cc;
            let cnt = (hw * cg) as f64;
            let mut s = 0.0f64;
            for p in 0..hw {
                for cc in 0..cg {
                    s += f64::from(x[idx(p, cc)]);
                }
            }
            let mean = s / cnt;
            let mut v = 0.0f64;
            for p in 0..hw {
                for cc in 0..cg {
                    let d = f64::from(x[idx(p, cc)]) - mean;
                    v += d * d;
                }
            }
            let inv = 1.0 / (v / cnt + f64::from(eps)).sqrt();
            for p in 0..hw {
                for cc in 0..cg {
                    let ch = g * cg + cc;
                    let mut o = (f64::from(x[idx(p, cc)]) - mean) * inv * f64::from(gamma[ch])
                        + f64::from(beta[ch]);
                    if silu {
                        o = o / (1.0 + (-o).exp());
                    }
                    y[idx(p, cc)] = o as f32;
                }
            }
        }
    }
    y
}

/// `torch.nn.functional.layer_norm(x, [c], gamma, beta, eps)` over rows of `c`.
pub fn layer_norm(x: &[f32], c: usize, gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    for (xr, yr) in x.chunks_exact(c).zip(y.chunks_exact_mut(c)) {
        let mean = xr.iter().map(|&v| f64::from(v)).sum::<f64>() / c as f64;
        let var = xr
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / c as f64;
        let inv = 1.0 / (var + f64::from(eps)).sqrt();
        for i in 0..c {
            yr[i] =
                ((f64::from(xr[i]) - mean) * inv * f64::from(gamma[i]) + f64::from(beta[i])) as f32;
        }
    }
    y
}

/// `torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal, scale)` with heads
/// split from the channel dim: `q` `[b, n, heads·d]`, `k`/`v` `[b, m, heads·d]`; computes only
/// the query rows in `rows` (all when `None`), returning `[b, rows, heads·d]`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    [b, n, m]: [usize; 3],
    heads: usize,
    d: usize,
    causal: bool,
    scale: f32,
    rows: Option<&[usize]>,
) -> Vec<f32> {
    let c = heads * d;
    let all: Vec<usize> = (0..n).collect();
    let rows = rows.unwrap_or(&all);
    let mut out = vec![0.0f32; b * rows.len() * c];
    let mut s = vec![0.0f64; m];
    for bi in 0..b {
        for h in 0..heads {
            for (ri, &i) in rows.iter().enumerate() {
                let qr = &q[(bi * n + i) * c + h * d..][..d];
                let mut mx = f64::NEG_INFINITY;
                for j in 0..m {
                    if causal && j > i {
                        s[j] = f64::NEG_INFINITY;
                        continue;
                    }
                    let kr = &k[(bi * m + j) * c + h * d..][..d];
                    let dot: f64 = qr
                        .iter()
                        .zip(kr)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum();
                    s[j] = dot * f64::from(scale);
                    mx = mx.max(s[j]);
                }
                let mut l = 0.0;
                let mut acc = vec![0.0f64; d];
                for j in 0..m {
                    let p = (s[j] - mx).exp();
                    if p == 0.0 {
                        continue;
                    }
                    l += p;
                    let vr = &v[(bi * m + j) * c + h * d..][..d];
                    for (a, &vv) in acc.iter_mut().zip(vr) {
                        *a += p * f64::from(vv);
                    }
                }
                let o = &mut out[(bi * rows.len() + ri) * c + h * d..][..d];
                for (o, a) in o.iter_mut().zip(&acc) {
                    *o = (a / l) as f32;
                }
            }
        }
    }
    out
}

/// `torch.nn.functional.silu`.
pub fn silu(x: f32) -> f32 {
    let x = f64::from(x);
    (x / (1.0 + (-x).exp())) as f32
}

/// `torch.nn.functional.gelu` (exact, erf form).
pub fn gelu(x: f32) -> f32 {
    let x = f64::from(x);
    (0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))) as f32
}

/// CLIP's `quick_gelu`: `x · sigmoid(1.702 x)`.
pub fn quick_gelu(x: f32) -> f32 {
    let x = f64::from(x);
    (x / (1.0 + (-1.702 * x).exp())) as f32
}

/// erf to ~1e-15 (series for small |x|, continued fraction beyond), for the GELU reference.
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 2.5 {
        // Maclaurin series: erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)).
        let mut term = a;
        let mut sum = a;
        let x2 = a * a;
        let mut nn = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            nn += 1.0;
            term *= -x2 / nn;
            sum += term / (2.0 * nn + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc continued fraction (Lentz), then 1 - erfc.
        let mut f = a;
        let (mut c, mut dd) = (a, 0.0);
        for i in 1..200 {
            let an = f64::from(i) / 2.0;
            dd = a + an * dd;
            dd = 1.0 / dd;
            c = a + an / c;
            let delta = c * dd;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-a * a).exp() / (f * std::f64::consts::PI.sqrt())
    };
    r.copysign(x)
}

/// diffusers' GEGLU after the projection: `x[.., :f] · gelu(x[.., f:])`.
pub fn geglu(x: &[f32], f: usize) -> Vec<f32> {
    x.chunks_exact(2 * f)
        .flat_map(|r| (0..f).map(move |i| (f64::from(r[i]) * f64::from(gelu(r[f + i]))) as f32))
        .collect()
}

/// `torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")`, channels-last.
pub fn upsample_nearest2x(x: &[f32], [n, h, w, c]: [usize; 4]) -> Vec<f32> {
    let mut y = vec![0.0; n * 4 * h * w * c];
    for b in 0..n {
        for oy in 0..2 * h {
            for ox in 0..2 * w {
                let src = ((b * h + oy / 2) * w + ox / 2) * c;
                let dst = ((b * 2 * h + oy) * 2 * w + ox) * c;
                y[dst..dst + c].copy_from_slice(&x[src..src + c]);
            }
        }
    }
    y
}

/// `torch.nn.functional.interpolate(x, size=(oh, ow), mode="nearest")`, channels-last: source
/// index `min(floor(dst · (in / out) in f32), in − 1)`, as ATen's `nearest_idx`.
pub fn upsample_nearest(x: &[f32], [n, h, w, c]: [usize; 4], oh: usize, ow: usize) -> Vec<f32> {
    let (sh, sw) = (h as f32 / oh as f32, w as f32 / ow as f32);
    let mut y = Vec::with_capacity(n * oh * ow * c);
    for b in 0..n {
        for oy in 0..oh {
            let iy = ((oy as f32 * sh).floor() as usize).min(h - 1);
            for ox in 0..ow {
                let ix = ((ox as f32 * sw).floor() as usize).min(w - 1);
                let src = ((b * h + iy) * w + ix) * c;
                y.extend_from_slice(&x[src..src + c]);
            }
        }
    }
    y
}

/// `torch.cat([a, b], dim=-1)` for rows of `ca` and `cb`.
pub fn concat_channels(a: &[f32], b: &[f32], ca: usize, cb: usize) -> Vec<f32> {
    a.chunks_exact(ca)
        .zip(b.chunks_exact(cb))
        .flat_map(|(x, y)| x.iter().chain(y).copied())
        .collect()
}

/// diffusers `get_timestep_embedding` (models/embeddings.py), computed as torch does in f32:
/// `exponent = -ln(max_period)·i / (half − shift)`, `freq = exp(exponent)`, `arg = scale·t·freq`,
/// then `[sin, cos]` (flipped to `[cos, sin]` with `flip_sin_to_cos`), zero pad for odd dims.
pub fn timestep_embedding(
    t: &[f32],
    dim: usize,
    flip: bool,
    shift: f32,
    scale: f32,
    max_period: f32,
) -> Vec<f32> {
    let half = dim / 2;
    let mut out = vec![0.0f32; t.len() * dim];
    for (b, &tv) in t.iter().enumerate() {
        for j in 0..half {
            let exponent = -max_period.ln() * j as f32 / (half as f32 - shift);
            let arg = scale * (tv * exponent.exp());
            let (s, c) = (f64::from(arg).sin() as f32, f64::from(arg).cos() as f32);
            let (first, second) = if flip { (c, s) } else { (s, c) };
            out[b * dim + j] = first;
            out[b * dim + half + j] = second;
        }
    }
    out
}

/// The fused sampler update: `ε = ε_u + s·(ε_c − ε_u)` (or `ε` alone), then
/// `x' = a·x + b·ε + c·noise + d·hist`. Returns `(x', ε)`.
#[allow(clippy::too_many_arguments)]
pub fn sampler_step(
    x: &[f32],
    eps: &[f32],
    noise: Option<&[f32]>,
    hist: Option<&[f32]>,
    guidance: Option<f32>,
    [a, b, c, d]: [f32; 4],
) -> (Vec<f32>, Vec<f32>) {
    let n = x.len();
    let mut y = vec![0.0; n];
    let mut e_out = vec![0.0; n];
    for i in 0..n {
        let e = match guidance {
            Some(s) => eps[i] + s * (eps[n + i] - eps[i]),
            None => eps[i],
        };
        let mut r = a * x[i] + b * e;
        if let Some(z) = noise {
            r += c * z[i];
        }
        if let Some(h) = hist {
            r += d * h[i];
        }
        y[i] = r;
        e_out[i] = e;
    }
    (y, e_out)
}

/// The flag [`crate::ops::flag_nonfinite`] leaves: `min(flag, code)` when any value of `x`
/// is NaN or ±Inf (`torch.isfinite(x).all()` negated), else `flag`.
pub fn flag_nonfinite(x: &[f32], flag: u32, code: u32) -> u32 {
    if x.iter().all(|v| v.is_finite()) {
        flag
    } else {
        flag.min(code)
    }
}

/// RGB `[h, w, 3]` → RGBA8 texels `[h, row]` (u32, little-endian R, G, B, 255; padding 0):
/// `round_half_even(clamp(v, 0, 1)·255)`, R and B swapped for BGRA.
pub fn to_rgba8(x: &[f32], h: usize, w: usize, row: usize, swap_rb: bool) -> Vec<u32> {
    let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round_ties_even() as u32;
    let mut out = vec![0u32; h * row];
    for r in 0..h {
        for c in 0..w {
            let s = (r * w + c) * 3;
            let (mut red, green, mut blue) = (q(x[s]), q(x[s + 1]), q(x[s + 2]));
            if swap_rb {
                std::mem::swap(&mut red, &mut blue);
            }
            out[r * row + c] = red | (green << 8) | (blue << 16) | (255 << 24);
        }
    }
    out
}

/// `ops::table_combine`: `Σ row[kᵢ] · tᵢ[j]` per element j, optionally clamped to ±r (f64
/// accumulation).
pub fn table_combine(row: &[f32], terms: &[(usize, &[f32])], clamp: Option<f32>) -> Vec<f32> {
    let n = terms.first().map_or(0, |t| t.1.len());
    (0..n)
        .map(|j| {
            let v = terms
                .iter()
                .map(|&(k, t)| f64::from(row[k]) * f64::from(t[j]))
                .sum::<f64>() as f32;
            clamp.map_or(v, |r| v.clamp(-r, r))
        })
        .collect()
}

/// `ops::table_blend`: `m·x + (1 − m)·(a·img + b·noise)` per element.
pub fn table_blend(x: &[f32], m: &[f32], img: &[f32], noise: &[f32], a: f32, b: f32) -> Vec<f32> {
    (0..x.len())
        .map(|j| m[j] * x[j] + (1.0 - m[j]) * (a * img[j] + b * noise[j]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // Values from Abramowitz & Stegun table 7.1.
        for (x, e) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
        ] {
            assert!((erf(x) - e).abs() < 1e-14, "erf({x}) = {} vs {e}", erf(x));
            assert!((erf(-x) + e).abs() < 1e-14);
        }
    }

    #[test]
    fn small_hand_checked_cases() {
        // [[1,2],[3,4]] · [[5,6],[7,8]] + [1, -1]
        assert_eq!(
            matmul(
                &[1., 2., 3., 4.],
                &[5., 6., 7., 8.],
                Some(&[1., -1.]),
                1,
                2,
                2,
                2,
                false
            ),
            vec![20., 21., 44., 49.]
        );
        // 3x3 box filter over a 3x3 ones image with padding 1: corners 4, edges 6, centre 9.
        let (y, shape) = conv2d(
            &[1.0; 9],
            [1, 3, 3, 1],
            &[1.0; 9],
            [3, 3, 1],
            None,
            None,
            1,
            [1; 4],
        );
        assert_eq!(shape, [1, 3, 3, 1]);
        assert_eq!(y, vec![4., 6., 4., 6., 9., 6., 4., 6., 4.]);
        // timestep 0: sin = 0, cos = 1.
        assert_eq!(
            timestep_embedding(&[0.0], 4, false, 1.0, 1.0, 10000.0),
            vec![0., 0., 1., 1.]
        );
    }
}
