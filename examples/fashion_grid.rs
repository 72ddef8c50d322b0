//! Generates every colour × garment pair the built-in model knows with the engine and writes
//! them as one grid (rows: colours, columns: classes), the picture in the README:
//!
//!     cargo run --release --example fashion_grid -- [MODEL_DIR] [OUT.png] [STEPS] [GUIDANCE]
//!
//! Defaults: assets/fashion-model, assets/fashion-grid.png, 30 steps, guidance 7.5; seed of
//! the cell at (row r, column c) = 10·r + c. Also prints how many garments came out in the
//! prompted colour (the colour measure of `sd_wgpu::fashion`), held-out pairs separately.

use sd_wgpu::fashion::Vocabulary;
use sd_wgpu::pipeline::{Pipeline, Request};
use sd_wgpu::weights::WeightDType;
use std::path::PathBuf;

fn main() -> sd_wgpu::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let root = env!("CARGO_MANIFEST_DIR");
    let model = PathBuf::from(arg(0, &format!("{root}/assets/fashion-model")));
    let out = PathBuf::from(arg(1, &format!("{root}/assets/fashion-grid.png")));
    let steps: usize = arg(2, "30").parse().unwrap_or(30);
    let guidance: f32 = arg(3, "7.5").parse().unwrap_or(7.5);

    let gpu = sd_wgpu::Gpu::new()?;
    let voc = Vocabulary::load(&model)?;
    let pipe = Pipeline::load(&gpu, &model, WeightDType::Auto)?;
    let s = pipe.default_size();
    let (zoom, gap) = (2, 4);
    let cell = s * zoom + gap;
    let (cols, rows) = (voc.classes.len(), voc.colours.len());
    let (gw, gh) = (cols * cell + gap, rows * cell + gap);
    let mut grid = vec![0.12f32; gw * gh * 3];
    let (mut right, mut held_right, mut held_total) = (0, 0, 0);
    let t0 = std::time::Instant::now();
    for (r, colour) in voc.colours.iter().enumerate() {
        for (c, class) in voc.classes.iter().enumerate() {
            let prompt = format!("a {colour} {class}");
            let req = Request {
                prompt: prompt.clone(),
                steps,
                guidance,
                width: s,
                height: s,
                seed: (10 * r + c) as u64,
                ..Request::default()
            };
            let img = pipe.generate(&gpu, &req, &mut |_| true)?.image;
            let ok = voc.garment_colour(&img) == Some(r);
            let held = voc.held_out.contains(&prompt);
            right += usize::from(ok);
            held_total += usize::from(held);
            held_right += usize::from(held && ok);
            // Held-out pairs get a light frame.
            let (x0, y0) = (gap + c * cell, gap + r * cell);
            if held {
                for y in y0 - 2..y0 + s * zoom + 2 {
                    for x in x0 - 2..x0 + s * zoom + 2 {
                        grid[(y * gw + x) * 3..(y * gw + x) * 3 + 3].fill(0.8);
                    }
                }
            }
            for y in 0..s * zoom {
                for x in 0..s * zoom {
                    let src = ((y / zoom) * s + x / zoom) * 3;
                    let dst = ((y0 + y) * gw + x0 + x) * 3;
                    grid[dst..dst + 3].copy_from_slice(&img[src..src + 3]);
                }
            }
        }
        eprintln!("row {}/{rows} ({colour}) done", r + 1);
    }
    let n = rows * cols;
    eprintln!(
        "{n} images in {:.1} s ({:.2} s each, {steps} steps, guidance {guidance}); prompted colour: {right}/{n}, held-out pairs {held_right}/{held_total}",
        t0.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64() / n as f64
    );
    let text = format!(
        "rows: {}; columns: {}; framed: held-out pairs; {steps} DDIM steps, guidance {guidance}, seed 10*row+column",
        voc.colours.join(", "),
        voc.classes.join(", ")
    );
    sd_wgpu::imageio::write_png(&out, &grid, gw, gh, &[("Description", &text)])?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
