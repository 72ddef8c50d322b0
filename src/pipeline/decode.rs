//! Decode and emit: the final latents through the VAE decoder to an RGB image on the host, or
//! into a texture on the device with no readback.

use super::generation::Generation;
use super::{Output, prepare::nhwc_to_nchw};
use crate::error::{Error, Result};
use crate::gpu::Recorder;
use crate::ops::{self, Unary};
use crate::tensor::DType;

impl Generation<'_> {
    /// Waits for the steps, checks them, and decodes: the image on the host.
    pub fn finish(self) -> Result<Output> {
        self.finish_inner(None)
    }

    /// Like [`Generation::finish`], writing the image into `texture` on the device (see
    /// [`super::Pipeline::generate_to_texture`] for what the texture must be); the returned
    /// `Output::image` is empty.
    pub fn finish_to_texture(self, texture: &wgpu::Texture) -> Result<Output> {
        super::check_texture(texture, &self.req)?;
        self.finish_inner(Some(texture))
    }

    /// Steps not yet submitted are submitted first. A run that releases its networks
    /// ([`super::Offload`]) ends with none on the device and the pool's cache freed.
    pub(super) fn finish_inner(self, texture: Option<&wgpu::Texture>) -> Result<Output> {
        let (pipe, gpu, offload) = (self.pipe, self.gpu, self.offload);
        let out = self.decode(texture);
        if offload {
            pipe.vae.release(gpu);
            gpu.trim_pool();
        }
        out
    }

    fn decode(mut self, texture: Option<&wgpu::Texture>) -> Result<Output> {
        let gpu = self.gpu;
        let clock = std::time::Instant::now();
        while self.step()?.is_some() {
            if gpu.is_simulating() {
                break;
            }
        }
        self.guard.finish(gpu)?;
        let (h, w, c) = self.latent_hwc;
        let latents = nhwc_to_nchw(&self.x.to_vec(gpu)?, c, h, w);
        self.timings.sampling += clock.elapsed();
        let steps_run = self.steps();
        let Generation {
            pipe,
            req,
            x,
            mut guard,
            timings,
            truncated_tokens,
            plan,
            table,
            noise,
            _persistent,
            unet,
            offload,
            auto_tiled,
            ..
        } = self;
        drop((plan, table, noise, _persistent, unet));
        if offload {
            pipe.unet.release(gpu);
        }
        let mut out = Output {
            latents,
            image: Vec::new(),
            width: req.width,
            height: req.height,
            truncated_tokens,
            steps_run,
            timings,
            vae_tiled_automatically: auto_tiled,
        };
        // `denoising_end`: the latents are the result (for a refiner), not decoded.
        if req.denoising_end.is_some() {
            guard.finish(gpu)?;
            return Ok(out);
        }
        // The step's buffers are of no use to the VAE, whose activations are larger: free them
        // rather than hold both at the decoder's peak (the plan was dropped just above).
        gpu.trim_pool();
        let tiny = pipe
            .tiny_for(&req)?
            .filter(|_| req.decoder == super::Decoder::Tiny);
        let vae = match tiny {
            Some(_) => None,
            None => Some(pipe.vae.get_timed(gpu, offload, &mut out.timings.loading)?),
        };
        let clock = std::time::Instant::now();
        gpu.set_profile_stage("VAE decode");
        let tiles = pipe.vae_tiles(&req, true)?;
        let n = req.batch_size;
        // The VAE of latents `z` (scaled): ÷ scaling_factor, then the decoder with the
        // pipeline's memory policy: before each 2× upsampling, submit what is recorded and
        // free the smaller level's buffers, so the decoder's peak is the largest level's
        // working set, not every level's.
        // (`z` is dropped once scaled: its buffer is free for the decoder.)
        let vae_decode = |rec: &mut Recorder<'_>, z: crate::tensor::Tensor| {
            let vae = vae
                .as_ref()
                .ok_or_else(|| Error::unsupported("decode", "no VAE"))?;
            let scaled = ops::unary(
                rec,
                &z,
                Unary::Affine,
                1.0 / pipe.vae.config.scaling_factor,
                0.0,
            )?;
            drop(z);
            vae.forward_levels(rec, &scaled, &mut |rec| {
                rec.submit()?;
                rec.gpu().trim_pool();
                Ok(())
            })
        };
        let mut rec = Recorder::new(gpu);
        // diffusers tiles the decode when the latents exceed a tile on a side.
        let tiles = tiles.filter(|g| h > g.tile || w > g.tile);
        let (img, what) = match (tiny, tiles) {
            // TAESD decodes the scaled latents as they are.
            (Some(tiny), _) => (tiny.forward(&mut rec, &x)?, "the tiny decoder's output"),
            (None, Some(g)) => {
                // Each tile on its own, blended on the host.
                let host = x.to_vec(gpu)?;
                drop(x);
                let tile = |t: &crate::tensor::Tensor| {
                    let mut rec = Recorder::new(gpu);
                    let img = vae_decode(&mut rec, t.clone())?;
                    rec.submit()?;
                    Ok(img)
                };
                let (img, shape) = super::tiling::run_tiled(gpu, &host, [n, h, w, c], &g, tile)?;
                let img =
                    crate::tensor::Tensor::from_f32(gpu, &img, &shape, DType::F32, "vae tiles")?;
                (img, "the VAE decoder's output")
            }
            (None, None) => (vae_decode(&mut rec, x)?, "the VAE decoder's output"),
        };
        guard.check(&mut rec, &img, what.into())?;
        // diffusers' image processor: (x / 2 + 0.5).clamp(0, 1).
        let img = ops::unary(&mut rec, &img, Unary::Affine, 0.5, 0.5)?;
        let img = ops::clamp(&mut rec, &img, 0.0, 1.0)?;
        if let Some(tex) = texture {
            let swap = matches!(
                tex.format(),
                wgpu::TextureFormat::Bgra8Unorm | wgpu::TextureFormat::Bgra8UnormSrgb
            );
            let (hh, ww) = (req.height, req.width);
            let texels = ops::to_rgba8(&mut rec, &img.reshape(&[hh, ww, 3])?, swap)?;
            rec.submit()?;
            guard.finish(gpu)?;
            // A simulation only sizes the run: nothing to copy.
            if !gpu.is_simulating() {
                let mut enc =
                    gpu.device()
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("sd-wgpu texture output"),
                        });
                enc.copy_buffer_to_texture(
                    wgpu::TexelCopyBufferInfo {
                        buffer: texels.buffer().raw(),
                        layout: wgpu::TexelCopyBufferLayout {
                            offset: texels.byte_offset(),
                            bytes_per_row: Some((ops::rgba8_row(ww) * 4) as u32),
                            rows_per_image: Some(hh as u32),
                        },
                    },
                    tex.as_image_copy(),
                    wgpu::Extent3d {
                        width: ww as u32,
                        height: hh as u32,
                        depth_or_array_layers: 1,
                    },
                );
                gpu.queue().submit([enc.finish()]);
            }
            out.timings.decoding = clock.elapsed();
            return Ok(out);
        }
        rec.submit()?;
        guard.finish(gpu)?;
        let mut image = img.to_vec(gpu)?;
        if let Some(im) = req.init_image.as_ref().filter(|im| im.keep_unmasked) {
            if let Some(m) = &im.mask {
                let px = req.width * req.height;
                for (i, v) in image.iter_mut().enumerate() {
                    if m[(i / 3) % px] < 0.5 {
                        *v = im.rgb[i % (3 * px)];
                    }
                }
            }
        }
        out.image = image;
        out.timings.decoding = clock.elapsed();
        Ok(out)
    }
}
