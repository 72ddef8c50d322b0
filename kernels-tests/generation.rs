//! The step API (`Pipeline::start` → `Generation`): stepping one submission at a time with
//! progress and previews, or encoding several steps into the host's own command encoder,
//! gives `generate`'s latents and image bit for bit, for samplers with state (PNDM, DPM++)
//! and with step noise drawn up front in chunks (Euler ancestral, DDPM).

use crate::common::*;
use crate::pipeline::{fixtures, sneaker};
use sd_wgpu::pipeline::{Output, Pipeline, Request};
use sd_wgpu::schedulers::SamplerKind;
use sd_wgpu::weights::WeightDType;

fn same(what: &str, got: &Output, want: &Output) {
    assert_eq!(got.latents.len(), want.latents.len(), "{what}");
    let diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    let (dl, di) = (
        diff(&got.latents, &want.latents),
        diff(&got.image, &want.image),
    );
    assert!(
        dl == 0.0 && di == 0.0,
        "{what}: latents differ by {dl}, image by {di}"
    );
    assert_eq!(got.steps_run, want.steps_run, "{what}");
}

#[test]
fn step_api_and_host_encoders_give_generates_image() {
    let gpu = gpu();
    let mut pipe = Pipeline::load(gpu, &fixtures().join("sd1-tiny"), WeightDType::Auto).unwrap();
    // One noise row per chunk (a row is 8×8×4 floats): the chunk is refilled every step,
    // also between steps that share one encoder.
    pipe.noise_chunk_bytes = 1024;
    for kind in [
        SamplerKind::Pndm,
        SamplerKind::EulerAncestral,
        SamplerKind::Ddpm,
        SamplerKind::DpmPP2M { karras: true },
    ] {
        let req = Request {
            seed: 11,
            sampler: Some(kind),
            preview_every: 2,
            ..sneaker(5)
        };
        let mut reported = Vec::new();
        let want = pipe
            .generate(gpu, &req, &mut |p| {
                reported.push(p.step);
                true
            })
            .unwrap();
        assert_eq!(reported, (1..=want.steps_run).collect::<Vec<_>>());

        // One step per submission, each waited for.
        let mut job = pipe.start(gpu, &req).unwrap();
        let steps = job.steps();
        assert_eq!(steps, want.steps_run, "{kind:?}");
        while let Some(s) = job.step().unwrap() {
            let p = job.progress(s).unwrap();
            assert_eq!((p.step, p.steps), (s, steps));
            assert_eq!(p.preview.is_some(), s % 2 == 0, "{kind:?} step {s}");
        }
        assert!(job.is_done());
        same(&format!("{kind:?} step()"), &job.finish().unwrap(), &want);

        // Three steps per host command encoder, submitted by the host, never waited for.
        let mut job = pipe.start(gpu, &req).unwrap();
        loop {
            let mut enc = gpu.device().create_command_encoder(&Default::default());
            let mut last = None;
            for _ in 0..3 {
                last = job.encode_step(&mut enc).unwrap();
            }
            gpu.queue().submit([enc.finish()]);
            if last.is_none() {
                break;
            }
        }
        assert_eq!(job.submitted(), steps);
        same(
            &format!("{kind:?} encode_step()"),
            &job.finish().unwrap(),
            &want,
        );

        // Finishing early submits the remaining steps.
        let mut job = pipe.start(gpu, &req).unwrap();
        job.step().unwrap();
        same(&format!("{kind:?} finish()"), &job.finish().unwrap(), &want);
    }
    // A step that was never submitted has no progress.
    let mut job = pipe.start(gpu, &sneaker(2)).unwrap();
    let e = job.progress(1).unwrap_err().to_string();
    assert!(e.contains("has not been submitted"), "{e}");
}
