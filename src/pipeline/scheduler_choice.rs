//! The sampler a model's scheduler config names: diffusers' scheduler classes the engine
//! implements map to a [`SamplerKind`] (DPM-Solver only as the variants implemented), others
//! leave the choice to the request.

use crate::schedulers::SamplerKind;

/// Schedulers diffusers has that the engine does not implement yet: a model that names one
/// loads, and its requests must choose a sampler.
const OTHER_DIFFUSERS_SCHEDULERS: &[&str] = &[
    "DPMSolverSinglestepScheduler",
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
    // Whether key `k` is absent or holds diffusers' default `d`.
    let default = |k: &str, d: serde_json::Value| {
        scheduler_json.get(k).is_none_or(|v| v.is_null() || *v == d)
    };
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
        // UniPC and DEIS as diffusers configures them by default (order 2, UniPC's bh2
        // predictor-corrector on x₀, DEIS's log-ρ); other variants leave the choice to the
        // request.
        "UniPCMultistepScheduler" => {
            let no_corrector_off = scheduler_json["disable_corrector"]
                .as_array()
                .is_none_or(|a| a.is_empty());
            if !(default("solver_order", 2.into())
                && default("solver_type", "bh2".into())
                && default("predict_x0", true.into())
                && default("lower_order_final", true.into())
                && no_corrector_off)
            {
                return Ok(None);
            }
            SamplerKind::UniPc
        }
        "DEISMultistepScheduler" => {
            if !(default("solver_order", 2.into())
                && default("algorithm_type", "deis".into())
                && default("solver_type", "logrho".into())
                && default("lower_order_final", true.into()))
            {
                return Ok(None);
            }
            SamplerKind::Deis
        }
        "DPMSolverSDEScheduler" => SamplerKind::DpmSde,
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
                 LMSDiscreteScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler, \
                 DEISMultistepScheduler, DPMSolverSDEScheduler, LCMScheduler)"
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
            Some(SamplerKind::UniPc)
        );
        for other in [
            serde_json::json!({"_class_name": "UniPCMultistepScheduler", "solver_type": "bh1"}),
            serde_json::json!({"_class_name": "UniPCMultistepScheduler", "disable_corrector": [0]}),
            serde_json::json!({"_class_name": "DEISMultistepScheduler", "solver_order": 3}),
            serde_json::json!({"_class_name": "DPMSolverSinglestepScheduler"}),
        ] {
            assert_eq!(of(other.clone()).unwrap(), None, "{other}");
        }
        assert_eq!(
            of(serde_json::json!({"_class_name": "DEISMultistepScheduler", "solver_order": 2}))
                .unwrap(),
            Some(SamplerKind::Deis)
        );
        assert!(of(serde_json::json!({"_class_name": "FooScheduler"})).is_err());
    }
}
