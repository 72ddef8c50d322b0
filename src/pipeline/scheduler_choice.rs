//! The sampler a model's scheduler config names: diffusers' scheduler classes the engine
//! implements map to a [`SamplerKind`] (DPM-Solver only as the variants implemented), others
//! leave the choice to the request.

use crate::schedulers::SamplerKind;

/// Schedulers diffusers has that the engine does not implement yet: a model that names one
/// loads, and its requests must choose a sampler.
const OTHER_DIFFUSERS_SCHEDULERS: &[&str] = &[
    "DPMSolverSinglestepScheduler",
    "DPMSolverSDEScheduler",
    "UniPCMultistepScheduler",
    "DEISMultistepScheduler",
    "TCDScheduler",
    "EDMEulerScheduler",
    "EDMDPMSolverMultistepScheduler",
];

/// The sampler a scheduler config's `_class_name` names (`None`: a diffusers scheduler not
/// implemented yet); an unknown or missing class is an error.
pub(super) fn sampler_of(
    scheduler_json: &serde_json::Value,
) -> std::result::Result<Option<SamplerKind>, String> {
    let karras = scheduler_json["use_karras_sigmas"]
        .as_bool()
        .unwrap_or(false);
    let class = scheduler_json["_class_name"].as_str().unwrap_or("");
    Ok(Some(match class {
        "DDIMScheduler" => SamplerKind::Ddim { eta: 0.0 },
        "DDPMScheduler" => SamplerKind::Ddpm,
        "PNDMScheduler" => SamplerKind::Pndm,
        "EulerDiscreteScheduler" => SamplerKind::Euler,
        "EulerAncestralDiscreteScheduler" => SamplerKind::EulerAncestral,
        // Only the second-order midpoint DPM++ (ODE or SDE) is implemented; other variants
        // leave the choice to the request.
        "DPMSolverMultistepScheduler" => {
            let text = |k: &str, d: &str| scheduler_json[k].as_str().unwrap_or(d).to_string();
            let order = scheduler_json["solver_order"].as_u64().unwrap_or(2);
            if order != 2 || text("solver_type", "midpoint") != "midpoint" {
                return Ok(None);
            }
            match text("algorithm_type", "dpmsolver++").as_str() {
                "dpmsolver++" => SamplerKind::DpmPP2M { karras },
                "sde-dpmsolver++" => SamplerKind::DpmPP2MSde { karras },
                _ => return Ok(None),
            }
        }
        "LCMScheduler" => SamplerKind::Lcm,
        "HeunDiscreteScheduler" => SamplerKind::Heun,
        "KDPM2DiscreteScheduler" => SamplerKind::Dpm2,
        "KDPM2AncestralDiscreteScheduler" => SamplerKind::Dpm2Ancestral,
        "LMSDiscreteScheduler" => SamplerKind::Lms,
        c if OTHER_DIFFUSERS_SCHEDULERS.contains(&c) => return Ok(None),
        c => {
            return Err(format!(
                "scheduler `_class_name` {c:?} is not a scheduler sd-wgpu knows (DDIMScheduler, \
                 DDPMScheduler, PNDMScheduler, EulerDiscreteScheduler, \
                 EulerAncestralDiscreteScheduler, HeunDiscreteScheduler, KDPM2DiscreteScheduler, \
                 KDPM2AncestralDiscreteScheduler, \
                 LMSDiscreteScheduler, \
                 DPMSolverMultistepScheduler, LCMScheduler)"
            ));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::sampler_of;
    use crate::schedulers::SamplerKind;

    #[test]
    fn dpm_variants_map_only_where_implemented() {
        let of = |v: serde_json::Value| sampler_of(&v);
        let dpm = |extra: serde_json::Value| {
            let mut v = serde_json::json!({"_class_name": "DPMSolverMultistepScheduler"});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            of(v).unwrap()
        };
        assert_eq!(
            dpm(serde_json::json!({})),
            Some(SamplerKind::DpmPP2M { karras: false })
        );
        assert_eq!(
            dpm(
                serde_json::json!({"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": true})
            ),
            Some(SamplerKind::DpmPP2MSde { karras: true })
        );
        for other in [
            serde_json::json!({"solver_order": 3}),
            serde_json::json!({"solver_type": "heun"}),
            serde_json::json!({"algorithm_type": "dpmsolver"}),
        ] {
            assert_eq!(dpm(other.clone()), None, "{other}");
        }
        assert_eq!(
            of(serde_json::json!({"_class_name": "LMSDiscreteScheduler"})).unwrap(),
            Some(SamplerKind::Lms)
        );
        assert_eq!(
            of(serde_json::json!({"_class_name": "UniPCMultistepScheduler"})).unwrap(),
            None
        );
        assert!(of(serde_json::json!({"_class_name": "FooScheduler"})).is_err());
    }
}
