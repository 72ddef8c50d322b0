//! An analytic count of a U-Net call's floating-point operations, for benchmarks (achieved
//! TFLOP/s). Counted: every convolution, linear layer and attention matrix product, as
//! 2 · multiply-adds (`2·k·k·c_in·c_out` per output pixel for a k×k conv, `2·in·out` per token
//! for a linear, `2·N·M·d` for each of Q·Kᵀ and P·V). Not counted (each well under 1 % of an SD
//! step): norms, activations, softmax, residual adds, the time-embedding MLP. The structure
//! mirrors [`super::unet::UNet::load`] block for block.

use super::unet::UNetConfig;

/// Multiply-adds of a k×k convolution producing `h·w` pixels.
fn conv(k: usize, cin: usize, cout: usize, h: usize, w: usize) -> f64 {
    (k * k * cin * cout) as f64 * (h * w) as f64
}

/// Multiply-adds of a resnet block at `h×w` (two 3×3 convs, a 1×1 shortcut when the channel
/// count changes).
fn resnet(cin: usize, cout: usize, h: usize, w: usize) -> f64 {
    let short = if cin != cout {
        conv(1, cin, cout, h, w)
    } else {
        0.0
    };
    conv(3, cin, cout, h, w) + conv(3, cout, cout, h, w) + short
}

/// Multiply-adds of a transformer of `depth` blocks over `n = h·w` tokens of width `c`, with
/// a context of `m` tokens of width `d_ctx`.
fn transformer(c: usize, n: usize, m: usize, d_ctx: usize, depth: usize) -> f64 {
    let (c, n, m, d_ctx, depth) = (c as f64, n as f64, m as f64, d_ctx as f64, depth as f64);
    let proj = 2.0 * n * c * c; // proj_in, proj_out
    let self_attn = 4.0 * n * c * c + 2.0 * n * n * c; // q, k, v, out; QKᵀ, PV
    let cross = 2.0 * n * c * c + 2.0 * m * d_ctx * c + 2.0 * n * m * c; // q, out; k, v; QKᵀ, PV
    let ff = n * c * 8.0 * c + n * 4.0 * c * c; // GEGLU projection c → 8c, then 4c → c
    proj + depth * (self_attn + cross + ff)
}

impl UNetConfig {
    /// FLOPs of one U-Net call on one image of `h × w` latents with a text context of
    /// `ctx_len` tokens (77 per prompt chunk); multiply by the batch (2× with guidance).
    pub fn flops_per_image(&self, h: usize, w: usize, ctx_len: usize) -> f64 {
        let ch = &self.block_out_channels;
        let nb = ch.len();
        let d_ctx = self.cross_attention_dim;
        // Latent size at each level: a stride-2 conv with padding 1 gives ceil(x / 2).
        let mut sizes = vec![(h, w)];
        for _ in 1..nb {
            let (a, b) = sizes[sizes.len() - 1];
            sizes.push((a.div_ceil(2), b.div_ceil(2)));
        }
        let mut macs = conv(3, self.in_channels, ch[0], h, w);
        let mut out = ch[0];
        for (i, &block_out) in ch.iter().enumerate() {
            let (a, b) = sizes[i];
            let input = out;
            out = block_out;
            for j in 0..self.layers_per_block {
                macs += resnet(if j == 0 { input } else { out }, out, a, b);
                if self.down_attention[i] {
                    macs += transformer(out, a * b, ctx_len, d_ctx, self.depth(i));
                }
            }
            if i + 1 < nb {
                let (c2, d2) = sizes[i + 1];
                macs += conv(3, out, out, c2, d2);
            }
        }
        let top = ch[nb - 1];
        let (a, b) = sizes[nb - 1];
        macs += 2.0 * resnet(top, top, a, b)
            + transformer(top, a * b, ctx_len, d_ctx, self.depth(nb - 1));
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut out = rev[0];
        for i in 0..nb {
            let level = nb - 1 - i;
            let (a, b) = sizes[level];
            let prev = out;
            out = rev[i];
            let input = rev[(i + 1).min(nb - 1)];
            let layers = self.layers_per_block + 1;
            for j in 0..layers {
                let skip = if j == layers - 1 { input } else { out };
                let rin = if j == 0 { prev } else { out };
                macs += resnet(rin + skip, out, a, b);
                if self.up_attention[i] {
                    macs += transformer(out, a * b, ctx_len, d_ctx, self.depth(level));
                }
            }
            if i + 1 < nb {
                // Upsample2D: a 3×3 conv at the next (larger) level's size.
                let (c2, d2) = sizes[level - 1];
                macs += conv(3, out, out, c2, d2);
            }
        }
        macs += conv(3, ch[0], self.out_channels, h, w);
        2.0 * macs
    }

    /// Transformer blocks per `Transformer2D` at `level`.
    fn depth(&self, level: usize) -> usize {
        self.transformer_layers_per_block
            .get(level)
            .copied()
            .unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SD 1.5's U-Net at 64×64 latents (512²) with a 77-token context: ~0.80 TFLOP per image,
    /// 1.6 TFLOP for a guided step of two (the figure the platform notes quote); the structure
    /// is checked by hand on a one-level U-Net.
    #[test]
    fn sd15_unet_flops() {
        let c = UNetConfig::sd15();
        let f = c.flops_per_image(64, 64, 77);
        assert!((7.9e11..8.1e11).contains(&f), "{f:e}");
        // conv_in alone: 2·9·4·320·4096.
        let tiny = UNetConfig {
            block_out_channels: vec![320],
            down_attention: vec![false],
            up_attention: vec![false],
            layers_per_block: 1,
            heads: vec![8],
            transformer_layers_per_block: vec![1],
            ..UNetConfig::sd15()
        };
        // conv_in + 1 down resnet + 2 mid resnets + mid transformer + 2 up resnets + conv_out.
        let (h, w) = (8, 8);
        let want = 2.0
            * (conv(3, 4, 320, h, w)
                + 3.0 * resnet(320, 320, h, w)
                + transformer(320, 64, 77, 768, 1)
                + 2.0 * resnet(640, 320, h, w)
                + conv(3, 320, 4, h, w));
        assert_eq!(tiny.flops_per_image(h, w, 77), want);
    }
}
