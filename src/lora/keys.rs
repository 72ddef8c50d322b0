//! LoRA file keys → the network they patch and the module's name in the engine's (diffusers')
//! naming, written with `_` for `.` (kohya's spelling, the one form every format reduces to).
//!
//! The formats, as diffusers reads them (`loaders/lora_pipeline.py::lora_state_dict`,
//! `loaders/lora_conversion_utils.py`):
//! - kohya / A1111: `lora_unet_<module>`, `lora_te_<module>` (SDXL: `lora_te1_`, `lora_te2_`),
//!   each with `.lora_down.weight`, `.lora_up.weight` and optionally `.alpha`; SD 1.x / 2.x
//!   U-Nets in diffusers' module names, SDXL U-Nets in the original (SGM) names
//!   (`input_blocks_4_1_…`), which [`sgm_to_diffusers`] maps like diffusers'
//!   `_maybe_map_sgm_blocks_to_diffusers` (through the single-file loader's own table, which
//!   also places up-block upsamplers right).
//! - diffusers / PEFT: `unet.<module>.lora_A.weight` / `.lora_B.weight`, `text_encoder.` and
//!   `text_encoder_2.` prefixes (a file without any prefix is a U-Net's).

/// The network a LoRA module patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    Unet,
    TextEncoder,
    TextEncoder2,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Unet, Part::TextEncoder, Part::TextEncoder2];

    /// diffusers' component name (the PEFT key prefix).
    pub fn name(self) -> &'static str {
        match self {
            Part::Unet => "unet",
            Part::TextEncoder => "text_encoder",
            Part::TextEncoder2 => "text_encoder_2",
        }
    }

    pub fn is_text(self) -> bool {
        self != Part::Unet
    }
}

/// What a key holds for its module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `lora_down` / `lora_A`: `[rank, in]` or a conv's `[rank, in, kh, kw]`.
    Down,
    /// `lora_up` / `lora_B`: `[out, rank]` or `[out, rank, 1, 1]`.
    Up,
    /// kohya's scalar `alpha` (the module is scaled by alpha / rank).
    Alpha,
    /// A variant the engine does not apply (named in the error).
    Unsupported(&'static str),
}

/// A key's module: the network, the name (`_`-joined; for kohya SDXL U-Nets still in the
/// original layout, see `sgm`), and what the key holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub part: Part,
    pub module: String,
    /// kohya's SDXL U-Net names (`input_blocks_…`), mapped by [`sgm_to_diffusers`] once the
    /// U-Net's `layers_per_block` is known.
    pub sgm: bool,
    pub role: Role,
}

const KOHYA: [(&str, Part); 4] = [
    ("lora_unet_", Part::Unet),
    ("lora_te1_", Part::TextEncoder),
    ("lora_te2_", Part::TextEncoder2),
    ("lora_te_", Part::TextEncoder),
];

/// Suffixes of variants that are not a plain LoRA (LyCORIS' LoHa / LoKr, DoRA, LoCon's
/// CP-decomposed middle factor, full-weight diffs, LoRA biases).
const UNSUPPORTED: [(&str, &str); 9] = [
    (".dora_scale", "DoRA (dora_scale)"),
    (".lora_magnitude_vector", "DoRA (lora_magnitude_vector)"),
    (".hada_", "LoHa (hada_*)"),
    (".lokr_", "LoKr (lokr_*)"),
    (
        ".lora_mid.weight",
        "LoCon with a CP-decomposed middle factor (lora_mid)",
    ),
    (".diff", "full weight differences (diff)"),
    (".diff_b", "full bias differences (diff_b)"),
    (".lora_B.bias", "LoRA biases (lora_B.bias)"),
    (".lora_up.bias", "LoRA biases (lora_up.bias)"),
];

/// The module, network and role of one key of a LoRA file; `None` for a key of no known
/// format.
pub fn classify(key: &str) -> Option<KeyInfo> {
    if let Some((prefix, part)) = KOHYA.iter().find(|(p, _)| key.starts_with(p)) {
        let rest = &key[prefix.len()..];
        let (module, role) = split_role(
            rest,
            &[
                (".lora_down.weight", Role::Down),
                (".lora_up.weight", Role::Up),
                (".alpha", Role::Alpha),
            ],
        )?;
        let mut module = module.to_string();
        if part.is_text() {
            // transformers 4's `text_model.` prefix; transformers 5 module trees lack it.
            if let Some(m) = module.strip_prefix("text_model_") {
                module = m.to_string();
            }
        }
        let sgm = *part == Part::Unet && is_sgm(&module);
        return Some(KeyInfo {
            part: *part,
            module,
            sgm,
            role,
        });
    }
    let (part, rest) = split_part(key);
    let (module, role) = split_role(
        rest,
        &[
            (".lora_A.weight", Role::Down),
            (".lora_B.weight", Role::Up),
            (".lora.down.weight", Role::Down),
            (".lora.up.weight", Role::Up),
        ],
    )?;
    let module = if part.is_text() {
        module.strip_prefix("text_model.").unwrap_or(module)
    } else {
        module
    };
    Some(KeyInfo {
        part,
        module: module.replace('.', "_"),
        sgm: false,
        role,
    })
}

/// A diffusers / PEFT key's network and the rest after its component prefix (`unet.`,
/// `text_encoder.`, `text_encoder_2.`); a key without one is the U-Net's.
pub fn split_part(key: &str) -> (Part, &str) {
    Part::ALL
        .iter()
        .rev() // `text_encoder_2.` before `text_encoder.`
        .find_map(|p| key.strip_prefix(&format!("{}.", p.name())).map(|r| (*p, r)))
        .unwrap_or((Part::Unet, key))
}

/// `rest` split into its module and role by the first matching suffix (or an unsupported
/// variant's marker).
fn split_role<'a>(rest: &'a str, suffixes: &[(&str, Role)]) -> Option<(&'a str, Role)> {
    if let Some((s, role)) = suffixes.iter().find(|(s, _)| rest.ends_with(s)) {
        return Some((&rest[..rest.len() - s.len()], *role));
    }
    UNSUPPORTED.iter().find_map(|(marker, what)| {
        rest.find(marker)
            .map(|i| (&rest[..i], Role::Unsupported(what)))
    })
}

/// Whether a kohya U-Net module name is in the original (SGM) layout.
fn is_sgm(module: &str) -> bool {
    [
        "input_blocks_",
        "middle_block_",
        "output_blocks_",
        "time_embed_",
        "label_emb_",
        "out_",
    ]
    .iter()
    .any(|p| module.starts_with(p))
}

/// A kohya SDXL U-Net module name (`input_blocks_4_1_transformer_blocks_0_attn1_to_q`) → the
/// diffusers name in `_` form (`down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q`),
/// through the single-file loader's key map for a U-Net of `layers_per_block`; `None` when
/// it names no module of such a U-Net.
pub fn sgm_to_diffusers(module: &str, layers_per_block: usize) -> Option<String> {
    let dotted = sgm_dotted(module)?;
    let name =
        crate::weights::single_file::unet_key(&format!("{dotted}.weight"), layers_per_block)?;
    Some(name.strip_suffix(".weight")?.replace('.', "_"))
}

/// The original key's dots back where the single-file map needs them: the block indices and
/// a resnet's sub-module (`in_layers_2` → `in_layers.2`); attention sub-names keep their `_`.
fn sgm_dotted(module: &str) -> Option<String> {
    // (prefix, how many index tokens follow it); anything else (`out_2`): one word, one index.
    const HEADS: [(&str, usize); 5] = [
        ("input_blocks_", 2),
        ("output_blocks_", 2),
        ("middle_block_", 1),
        ("time_embed_", 1),
        ("label_emb_", 2),
    ];
    let (head_words, n) = HEADS
        .iter()
        .find(|(p, _)| module.starts_with(p))
        .map_or((1, 1), |(_, n)| (2, *n));
    let mut parts = module.split('_');
    let head: Vec<&str> = (0..head_words)
        .map(|_| parts.next())
        .collect::<Option<_>>()?;
    let head = head.join("_");
    let indices: Vec<&str> = (0..n).map(|_| parts.next()).collect::<Option<_>>()?;
    if indices.iter().any(|i| i.parse::<usize>().is_err()) {
        return None;
    }
    let rest: Vec<&str> = parts.collect();
    let rest = rest.join("_");
    let mut out = format!("{head}.{}", indices.join("."));
    if !rest.is_empty() {
        let leaf = ["in_layers_", "out_layers_", "emb_layers_"]
            .iter()
            .find_map(|p| {
                let n = rest.strip_prefix(p)?;
                n.parse::<usize>()
                    .ok()
                    .map(|n| format!("{}.{n}", &p[..p.len() - 1]))
            })
            .unwrap_or(rest);
        out = format!("{out}.{leaf}");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kohya_and_peft_keys() {
        let k = classify("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight")
            .unwrap();
        assert_eq!(
            (k.part, k.module.as_str(), k.role),
            (
                Part::TextEncoder,
                "encoder_layers_0_self_attn_q_proj",
                Role::Down
            )
        );
        let k =
            classify("text_encoder_2.text_model.encoder.layers.1.mlp.fc1.lora_B.weight").unwrap();
        assert_eq!(
            (k.part, k.module.as_str(), k.role),
            (Part::TextEncoder2, "encoder_layers_1_mlp_fc1", Role::Up)
        );
        let k = classify("lora_unet_input_blocks_4_1_proj_in.alpha").unwrap();
        assert!(k.sgm && k.role == Role::Alpha);
        let k = classify("lora_unet_down_blocks_0_resnets_0_conv1.dora_scale").unwrap();
        assert!(matches!(k.role, Role::Unsupported(_)));
        assert!(classify("lora_unet_x.something_else").is_none());
    }

    #[test]
    fn sgm_names_map_like_the_single_file_loader() {
        let lpb = 2;
        for (sgm, want) in [
            (
                "input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                "down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q",
            ),
            (
                "input_blocks_1_0_in_layers_2",
                "down_blocks_0_resnets_0_conv1",
            ),
            (
                "input_blocks_5_0_emb_layers_1",
                "down_blocks_1_resnets_1_time_emb_proj",
            ),
            ("input_blocks_3_0_op", "down_blocks_0_downsamplers_0_conv"),
            ("middle_block_1_proj_out", "mid_block_attentions_0_proj_out"),
            ("middle_block_2_out_layers_3", "mid_block_resnets_1_conv2"),
            ("output_blocks_2_1_conv", "up_blocks_0_upsamplers_0_conv"),
            (
                "output_blocks_3_0_skip_connection",
                "up_blocks_1_resnets_0_conv_shortcut",
            ),
            ("time_embed_2", "time_embedding_linear_2"),
            ("label_emb_0_0", "add_embedding_linear_1"),
            ("out_2", "conv_out"),
        ] {
            assert_eq!(sgm_to_diffusers(sgm, lpb).as_deref(), Some(want), "{sgm}");
        }
        assert_eq!(sgm_to_diffusers("input_blocks_x_1_proj_in", lpb), None);
    }
}
