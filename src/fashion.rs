//! The built-in model's vocabulary (`assets/fashion-model/vocabulary.json`: colour words with
//! their RGB tints, garment classes, held-out pairs) and the colour measure its evaluation uses
//! (the same rule as `tools/train_fashion_model.py`'s `colour_of`).

use crate::error::{Error, Result};
use std::path::Path;

/// What the built-in model was trained on.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocabulary {
    pub colours: Vec<String>,
    /// Tint of each colour (each has a channel at 1).
    pub rgb: Vec<[f32; 3]>,
    pub classes: Vec<String>,
    /// Prompts never seen in training ("a red dress", …).
    pub held_out: Vec<String>,
}

impl Vocabulary {
    /// Reads `vocabulary.json` from a model folder.
    pub fn load(model_dir: &Path) -> Result<Self> {
        let path = model_dir.join("vocabulary.json");
        let v = crate::models::read_json(&path)?;
        let bad = |what: &str| Error::ModelLayout {
            path: path.clone(),
            what: what.to_string(),
        };
        let strings = |k: &str| -> Result<Vec<String>> {
            v[k].as_array()
                .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_string)).collect())
                .ok_or_else(|| bad(&format!("`{k}` must be a list of strings")))
        };
        let rgb = v["rgb"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|c| {
                        let c = c.as_array()?;
                        let f = |i: usize| c.get(i)?.as_f64().map(|x| x as f32);
                        Some([f(0)?, f(1)?, f(2)?])
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| bad("`rgb` must be a list of [r, g, b]"))?;
        let voc = Self {
            colours: strings("colours")?,
            rgb,
            classes: strings("classes")?,
            held_out: strings("held_out")?,
        };
        if voc.rgb.len() != voc.colours.len() {
            return Err(bad("`rgb` and `colours` differ in length"));
        }
        Ok(voc)
    }

    /// The colour (index into `colours`) of the garment in an RGB `[h, w, 3]` image in [0, 1]:
    /// the mean of the pixels brighter than 0.3 (max over RGB), divided by its largest
    /// channel, nearest tint. `None` when no pixel is that bright.
    pub fn garment_colour(&self, image: &[f32]) -> Option<usize> {
        let mut sum = [0f64; 3];
        let mut n = 0usize;
        for p in image.chunks_exact(3) {
            if p.iter().copied().fold(f32::MIN, f32::max) > 0.3 {
                for c in 0..3 {
                    sum[c] += f64::from(p[c]);
                }
                n += 1;
            }
        }
        if n == 0 {
            return None;
        }
        let m = sum.iter().copied().fold(f64::MIN, f64::max).max(1e-6);
        let mean = sum.map(|s| s / m);
        (0..self.rgb.len()).min_by(|&a, &b| {
            let d = |i: usize| {
                (0..3)
                    .map(|c| (mean[c] - f64::from(self.rgb[i][c])).powi(2))
                    .sum::<f64>()
            };
            d(a).total_cmp(&d(b))
        })
    }
}
