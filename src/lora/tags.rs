//! LoRAs named on the command line (`PATH[:SCALE]`) and in prompts, A1111's way:
//! `<lora:NAME>`, `<lora:NAME:W>` (both networks), `<lora:NAME:TE:UNET>` or
//! `<lora:NAME:te=TE:unet=UNET>`, NAME a file in the LoRA folder. A1111 removes every
//! `<type:…>` tag from the prompt text (`extra_networks.parse_prompt`, pattern
//! `<(\w+):([^>]+)>`); so does the engine for `lora` and `lyco`, and it refuses the extra
//! networks it does not have (hypernetworks) instead of ignoring them.

use super::LoraSpec;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// A LoRA named in a prompt: the name (a file stem in the LoRA folder) and its scales.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptLora {
    pub name: String,
    pub scale: f32,
    pub text_scale: f32,
}

/// `PATH[:SCALE]` (scale 1 when absent; a `:` followed by anything but a number is part of
/// the path).
pub fn parse_spec(arg: &str) -> Result<LoraSpec> {
    let (path, scale) = match arg.rsplit_once(':') {
        Some((p, s)) if !p.is_empty() && s.trim().parse::<f32>().is_ok() => {
            (p, s.trim().parse::<f32>().unwrap_or(1.0))
        }
        _ => (arg, 1.0),
    };
    if !scale.is_finite() {
        return Err(Error::request(
            "lora",
            format!("{arg:?}: scale is not finite"),
        ));
    }
    Ok(LoraSpec::new(path, scale))
}

/// The prompt without its LoRA tags, and the LoRAs they name (in order).
pub fn extract(prompt: &str) -> Result<(String, Vec<PromptLora>)> {
    let mut text = String::with_capacity(prompt.len());
    let mut loras = Vec::new();
    let mut rest = prompt;
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let tag = after
            .find('>')
            .map(|close| &after[..close])
            .and_then(|body| {
                let (kind, args) = body.split_once(':')?;
                let word =
                    !kind.is_empty() && kind.chars().all(|c| c.is_alphanumeric() || c == '_');
                (word && !args.is_empty()).then_some((kind, args))
            });
        match tag {
            Some((kind, args)) => {
                match kind {
                    "lora" | "lyco" => loras.push(parse_tag(prompt, args)?),
                    _ => {
                        return Err(Error::Prompt {
                            prompt: prompt.to_string(),
                            what: format!(
                                "<{kind}:{args}>: only LoRA extra networks (<lora:NAME:W>) are \
                                 supported"
                            ),
                        });
                    }
                }
                rest = &after[kind.len() + 1 + args.len() + 1..];
            }
            None => {
                text.push('<');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    Ok((text, loras))
}

/// `NAME[:TE[:UNET]]` or with `te=` / `unet=` named values.
fn parse_tag(prompt: &str, args: &str) -> Result<PromptLora> {
    let bad = |what: String| Error::Prompt {
        prompt: prompt.to_string(),
        what,
    };
    let mut parts = args.split(':');
    let name = parts.next().unwrap_or("").trim().to_string();
    if name.is_empty() {
        return Err(bad(format!("<lora:{args}>: no LoRA name")));
    }
    let (mut te, mut unet) = (None, None);
    for (i, p) in parts.enumerate() {
        let (key, value) = match p.split_once('=') {
            Some((k, v)) => (k.trim(), v),
            None => (if i == 0 { "te" } else { "unet" }, p),
        };
        let v: f32 = value
            .trim()
            .parse()
            .ok()
            .filter(|v: &f32| v.is_finite())
            .ok_or_else(|| bad(format!("<lora:{args}>: {value:?} is not a number")))?;
        match key {
            "te" if te.is_none() => te = Some(v),
            "unet" if unet.is_none() => unet = Some(v),
            _ => return Err(bad(format!("<lora:{args}>: unexpected {p:?}"))),
        }
    }
    let te = te.unwrap_or(1.0);
    Ok(PromptLora {
        name,
        scale: unet.unwrap_or(te),
        text_scale: te,
    })
}

/// The file a prompt's LoRA names in `dir`: `NAME`, `NAME.safetensors`, or a file of that
/// stem in a subfolder (A1111 looks through the folder tree).
pub fn resolve(dir: &Path, name: &str) -> Result<PathBuf> {
    let not_found = |what: String| Error::Lora {
        path: dir.join(name),
        what,
    };
    if name.contains("..") || Path::new(name).is_absolute() {
        return Err(not_found(
            "a LoRA name must stay inside the LoRA folder".into(),
        ));
    }
    for candidate in [dir.join(name), dir.join(format!("{name}.safetensors"))] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() && depth < 8 {
                stack.push((p, depth + 1));
            } else if p.file_stem().and_then(|s| s.to_str()) == Some(name)
                && p.extension().and_then(|e| e.to_str()) == Some("safetensors")
            {
                return Ok(p);
            }
        }
    }
    Err(not_found(format!(
        "no {name}.safetensors in {} (--lora-dir)",
        dir.display()
    )))
}

impl PromptLora {
    /// The spec for this tag with its file found in `dir`.
    pub fn spec(&self, dir: &Path) -> Result<LoraSpec> {
        Ok(LoraSpec {
            path: resolve(dir, &self.name)?,
            scale: self.scale,
            text_scale: Some(self.text_scale),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_removed_and_parsed() {
        let (text, l) =
            extract("a cat <lora:ink:0.8>, <lora:film:te=0.5:unet=1.2> 2<3 <b>").unwrap();
        assert_eq!(text, "a cat ,  2<3 <b>");
        assert_eq!(
            l[0],
            PromptLora {
                name: "ink".into(),
                scale: 0.8,
                text_scale: 0.8
            }
        );
        assert_eq!(
            l[1],
            PromptLora {
                name: "film".into(),
                scale: 1.2,
                text_scale: 0.5
            }
        );
        let (_, l) = extract("<lora:x:0.3:0.7><lora:y>").unwrap();
        assert_eq!((l[0].text_scale, l[0].scale, l[1].scale), (0.3, 0.7, 1.0));
        assert!(extract("<lora:x:abc>").is_err());
        assert!(extract("<lora::1>").is_err());
        assert!(extract("<hypernet:h:1>").is_err());
        assert!(extract("<lora:x:1:2:3>").is_err());
    }

    #[test]
    fn specs() {
        assert_eq!(
            parse_spec("a/b.safetensors:0.5").unwrap(),
            LoraSpec::new("a/b.safetensors", 0.5)
        );
        assert_eq!(
            parse_spec("C:\\x.safetensors").unwrap(),
            LoraSpec::new("C:\\x.safetensors", 1.0)
        );
        assert!(parse_spec("x:inf").is_err());
    }
}
