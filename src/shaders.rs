//! WGSL sources (embedded with `include_str!`) and the tiny preprocessor that makes their
//! variants.
//!
//! WGSL has no preprocessor; we need just three things:
//! - `#include "name.wgsl"` pastes another embedded shader (shared GEMM tile loop, helpers);
//! - `#if NAME` / `#else` / `#endif` (nestable) keep or drop lines by a boolean define, for
//!   storage-type variants (f16 weights packed in `u32`);
//! - integer defines become `const NAME: u32 = V;` lines at the top, for sizes that must be
//!   compile-time constants in function-scope arrays (attention's head dim).
//!
//! Workgroup tile sizes are WGSL `override` constants set at pipeline creation.

use crate::error::{Error, Result};

/// Every shader file in `shaders/`, by file name.
pub const SOURCES: &[(&str, &str)] = &[
    ("common.wgsl", include_str!("../shaders/common.wgsl")),
    ("gemm_tile.wgsl", include_str!("../shaders/gemm_tile.wgsl")),
    (
        "gemm_tile_vec4.wgsl",
        include_str!("../shaders/gemm_tile_vec4.wgsl"),
    ),
    ("gemm_bias.wgsl", include_str!("../shaders/gemm_bias.wgsl")),
    (
        "gemm_subgroup.wgsl",
        include_str!("../shaders/gemm_subgroup.wgsl"),
    ),
    ("matmul.wgsl", include_str!("../shaders/matmul.wgsl")),
    ("conv2d.wgsl", include_str!("../shaders/conv2d.wgsl")),
    (
        "conv2d_narrow.wgsl",
        include_str!("../shaders/conv2d_narrow.wgsl"),
    ),
    ("winograd.wgsl", include_str!("../shaders/winograd.wgsl")),
    ("reduce.wgsl", include_str!("../shaders/reduce.wgsl")),
    (
        "group_norm.wgsl",
        include_str!("../shaders/group_norm.wgsl"),
    ),
    (
        "group_norm_banded.wgsl",
        include_str!("../shaders/group_norm_banded.wgsl"),
    ),
    (
        "layer_norm.wgsl",
        include_str!("../shaders/layer_norm.wgsl"),
    ),
    (
        "group_norm_split.wgsl",
        include_str!("../shaders/group_norm_split.wgsl"),
    ),
    ("attention.wgsl", include_str!("../shaders/attention.wgsl")),
    (
        "attention_io.wgsl",
        include_str!("../shaders/attention_io.wgsl"),
    ),
    (
        "attention_cpu.wgsl",
        include_str!("../shaders/attention_cpu.wgsl"),
    ),
    (
        "attention_cpu_wide.wgsl",
        include_str!("../shaders/attention_cpu_wide.wgsl"),
    ),
    (
        "attention_gemm.wgsl",
        include_str!("../shaders/attention_gemm.wgsl"),
    ),
    (
        "attention_chunks.wgsl",
        include_str!("../shaders/attention_chunks.wgsl"),
    ),
    (
        "attention_tiled.wgsl",
        include_str!("../shaders/attention_tiled.wgsl"),
    ),
    (
        "elementwise.wgsl",
        include_str!("../shaders/elementwise.wgsl"),
    ),
    ("upsample.wgsl", include_str!("../shaders/upsample.wgsl")),
    ("concat.wgsl", include_str!("../shaders/concat.wgsl")),
    ("cast.wgsl", include_str!("../shaders/cast.wgsl")),
    (
        "timestep_embedding.wgsl",
        include_str!("../shaders/timestep_embedding.wgsl"),
    ),
    (
        "sampler_step.wgsl",
        include_str!("../shaders/sampler_step.wgsl"),
    ),
    (
        "random_fill.wgsl",
        include_str!("../shaders/random_fill.wgsl"),
    ),
    (
        "step_table.wgsl",
        include_str!("../shaders/step_table.wgsl"),
    ),
    ("to_rgba8.wgsl", include_str!("../shaders/to_rgba8.wgsl")),
    (
        "finite_check.wgsl",
        include_str!("../shaders/finite_check.wgsl"),
    ),
];

/// A define: a boolean for `#if`, or an integer that becomes a `const`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Define {
    Flag(&'static str),
    Const(&'static str, u32),
}

pub fn source(name: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

fn err(shader: &str, what: String) -> Error {
    Error::Unsupported {
        op: "shader preprocessor",
        what: format!("{shader}: {what}"),
    }
}

/// Expands `name` with `defines` into plain WGSL.
pub fn preprocess(name: &str, defines: &[Define]) -> Result<String> {
    let mut out = String::new();
    // f16 activations (common.wgsl's `act`) need the extension enabled before anything else.
    if defines.contains(&Define::Flag("ACT_F16")) {
        out.push_str("enable f16;\n");
    }
    for d in defines {
        if let Define::Const(n, v) = d {
            out.push_str(&format!("const {n}: u32 = {v}u;\n"));
        }
    }
    expand(name, defines, &mut out, 0)?;
    Ok(out)
}

fn expand(name: &str, defines: &[Define], out: &mut String, depth: usize) -> Result<()> {
    if depth > 8 {
        return Err(err(name, "#include nested too deeply".into()));
    }
    let src = source(name).ok_or_else(|| err(name, "no such shader".into()))?;
    // Stack of (this branch is active, some branch of this #if was taken).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |s: &Vec<(bool, bool)>| s.iter().all(|(a, _)| *a);
    for (i, line) in src.lines().enumerate() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("#if ") {
            let flag = rest.trim();
            let on = defines
                .iter()
                .any(|d| matches!(d, Define::Flag(n) if *n == flag));
            stack.push((on, on));
        } else if t.starts_with("#else") {
            let top = stack
                .last_mut()
                .ok_or_else(|| err(name, format!("line {}: #else without #if", i + 1)))?;
            *top = (!top.1, true);
        } else if t.starts_with("#endif") {
            stack
                .pop()
                .ok_or_else(|| err(name, format!("line {}: #endif without #if", i + 1)))?;
        } else if !active(&stack) {
            continue;
        } else if let Some(rest) = t.strip_prefix("#include ") {
            expand(rest.trim().trim_matches('"'), defines, out, depth + 1)?;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !stack.is_empty() {
        return Err(err(name, "#if without #endif".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant of every kernel the ops can create parses and validates with naga, so
    /// a shader error shows up in `cargo test` on a machine with no GPU.
    #[test]
    fn every_shader_variant_validates_with_naga() {
        let keys = crate::ops::all_kernel_keys();
        assert!(
            keys.len() >= 12,
            "only {} kernel variants listed",
            keys.len()
        );
        let mut failures = Vec::new();
        for key in &keys {
            let src = match preprocess(key.shader, &key.defines) {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("{key:?}: {e}"));
                    continue;
                }
            };
            let module = match naga::front::wgsl::parse_str(&src) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(format!("{key:?}:\n{}", e.emit_to_string(&src)));
                    continue;
                }
            };
            let caps = naga::valid::Capabilities::all();
            let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
            if let Err(e) = v.validate(&module) {
                failures.push(format!("{key:?}:\n{}", e.emit_to_string(&src)));
                continue;
            }
            assert!(
                module.entry_points.iter().any(|e| e.name == key.entry),
                "{key:?}: entry point `{}` missing",
                key.entry
            );
            // The Rust params struct must have the WGSL uniform's exact size.
            let uniform = module
                .global_variables
                .iter()
                .find(|(_, g)| g.space == naga::AddressSpace::Uniform)
                .map(|(_, g)| module.types[g.ty].inner.size(module.to_ctx()));
            if uniform != Some(key.params_size as u32) {
                failures.push(format!(
                    "{}: WGSL Params is {uniform:?} bytes, Rust says {}",
                    key.label(),
                    key.params_size
                ));
            }
            // Storage bindings 1.. must be exactly those the key declares.
            let mut storage: Vec<u32> = module
                .global_variables
                .iter()
                .filter(|(_, g)| matches!(g.space, naga::AddressSpace::Storage { .. }))
                .filter_map(|(_, g)| g.binding.as_ref().map(|b| b.binding))
                .collect();
            storage.sort_unstable();
            let expected: Vec<u32> = (1..=key.bindings.len() as u32).collect();
            if storage != expected {
                failures.push(format!(
                    "{}: storage bindings {storage:?}, key declares {expected:?}",
                    key.label()
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    #[test]
    fn every_shader_file_is_used_and_parses_alone_or_via_include() {
        let keys = crate::ops::all_kernel_keys();
        for (name, _) in SOURCES {
            let used = keys.iter().any(|k| k.shader == *name)
                || SOURCES
                    .iter()
                    .any(|(_, s)| s.contains(&format!("#include \"{name}\"")));
            assert!(used, "shaders/{name} is neither a kernel nor included");
        }
    }

    #[test]
    fn preprocessor_branches_and_includes() {
        let out = preprocess(
            "matmul.wgsl",
            &[Define::Flag("W_F16"), Define::Const("X", 3)],
        )
        .unwrap();
        assert!(out.starts_with("const X: u32 = 3u;\n"));
        assert!(out.contains("array<u32>"), "f16 branch kept");
        assert!(
            !out.lines().any(|l| l.trim_start().starts_with('#')),
            "every directive expanded"
        );
        assert!(out.contains("fn unpack_half"), "common.wgsl included");
        assert!(preprocess("nope.wgsl", &[]).is_err());
    }

    /// Kernels are created with naga's forced loop bounding off (`gpu/pipeline.rs`), which
    /// is sound only if no loop can run forever. Every loop must be a counted `for` over one
    /// variable: `for (var i = …; i < bound; i++ | i += STEP)` with STEP a positive literal or
    /// a constant, or the halving `for (var s = …; s > 0u; s >>= 1u)`; no `loop` / `while`.
    #[test]
    fn shader_loops_are_counted() {
        let positive = |step: &str, src: &str| -> bool {
            let lit = |t: &str| t.trim_end_matches('u').parse::<u64>().is_ok_and(|v| v > 0);
            lit(step)
                || src.lines().any(|l| {
                    let l = l.split("//").next().unwrap_or("").trim();
                    (l.starts_with(&format!("const {step}: u32 = "))
                        || l.starts_with(&format!("override {step}: u32 = ")))
                        && lit(l.rsplit('=').next().unwrap_or("").trim().trim_end_matches(';'))
                })
                // Integer defines become `const NAME: u32 = V;` lines (see `preprocess`);
                // the op that sets them always passes a positive value.
                || crate::ops::all_kernel_keys().iter().any(|k| {
                    k.defines
                        .iter()
                        .any(|d| matches!(d, Define::Const(n, v) if *n == step && *v > 0))
                })
        };
        let mut bad = Vec::new();
        for (name, src) in SOURCES {
            for (i, line) in src.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                let words: Vec<&str> = code
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .collect();
                if words.contains(&"loop") || words.contains(&"while") {
                    bad.push(format!("{name}:{}: `{}`", i + 1, line.trim()));
                }
                let Some(start) = code.find("for (") else {
                    continue;
                };
                // The header ends at the last `)` of the line (bounds may call functions).
                let end = code.rfind(')').filter(|&e| e > start).unwrap_or(code.len());
                let header = &code[start + 5..end];
                let parts: Vec<&str> = header.split(';').map(str::trim).collect();
                let ok = match parts.as_slice() {
                    [init, cond, step] => {
                        let var = init
                            .strip_prefix("var ")
                            .and_then(|r| r.split_whitespace().next())
                            .unwrap_or("");
                        let counted_up = cond.starts_with(&format!("{var} < "))
                            && (*step == format!("{var}++")
                                || step
                                    .strip_prefix(&format!("{var} += "))
                                    .is_some_and(|s| positive(s, src)));
                        let halving =
                            *cond == format!("{var} > 0u") && *step == format!("{var} >>= 1u");
                        !var.is_empty() && (counted_up || halving)
                    }
                    _ => false,
                };
                if !ok {
                    bad.push(format!("{name}:{}: `{}`", i + 1, line.trim()));
                }
            }
        }
        assert!(
            bad.is_empty(),
            "loops that are not plainly counted:\n{}",
            bad.join("\n")
        );
    }
}
