//! A host application that owns its wgpu device: it hands the device to the engine and runs
//! a frame loop in which every frame encodes one denoising step (`Generation::encode_step`)
//! and then its own render pass into the same command encoder, one submission per frame —
//! the engine never blocks the loop. After the last step the engine decodes straight into one
//! of the host's textures (no CPU readback), which the host draws. Headless here: the final
//! frame (4× the image, nearest filtering) is read back and written as a PNG.
//!
//!     cargo run --release --example texture_host -- ["a blue dress"] [frame.png]
//!
//! Uses the built-in model. `cargo test --release --example texture_host` checks the frame.

use sd_wgpu::Gpu;
use sd_wgpu::pipeline::{Pipeline, Request};
use sd_wgpu::weights::WeightDType;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
use std::path::{Path, PathBuf};

const ZOOM: u32 = 4;

/// What [`render`] returns: the final frame's RGBA8 bytes and side, the frames drawn while
/// the steps ran, and the engine's own `generate` output for the same request.
struct Rendered {
    frame: Vec<u8>,
    side: u32,
    frames: usize,
    steps: usize,
    latents: Vec<f32>,
    host: sd_wgpu::pipeline::Output,
}

/// Generates `prompt` one step per frame of the host's loop, decodes it into a texture, draws
/// it into a frame ZOOM× larger.
fn render(prompt: &str, seed: u64) -> Result<Rendered> {
    // The host's device, made the plain wgpu way.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))?;
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))?;
    // Handles are shared: the host keeps using the same device.
    let gpu = Gpu::from_device(device.clone(), queue.clone());

    let model = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/fashion-model"));
    let pipe = Pipeline::load(&gpu, &model, WeightDType::Auto)?;
    let side = pipe.default_size() as u32;
    let req = Request {
        prompt: prompt.to_string(),
        width: side as usize,
        height: side as usize,
        seed,
        ..Request::default()
    };
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("generated"),
        size: wgpu::Extent3d {
            width: side,
            height: side,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8UnormSrgb,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    // The same request through `generate` to host memory, for the comparison in the test.
    let host = pipe.generate(&gpu, &req, &mut |_| true)?;

    // The host's render pass: a full-screen triangle sampling the texture.
    let frame_side = side * ZOOM;
    let frame = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("frame"),
        size: wgpu::Extent3d {
            width: frame_side,
            height: frame_side,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8UnormSrgb,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("blit"),
        source: wgpu::ShaderSource::Wgsl(include_str!("blit.wgsl").into()),
    });
    let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some("blit"),
        layout: None,
        vertex: wgpu::VertexState {
            module: &shader,
            entry_point: Some("vs"),
            compilation_options: Default::default(),
            buffers: &[],
        },
        fragment: Some(wgpu::FragmentState {
            module: &shader,
            entry_point: Some("fs"),
            compilation_options: Default::default(),
            targets: &[Some(wgpu::TextureFormat::Rgba8UnormSrgb.into())],
        }),
        primitive: Default::default(),
        depth_stencil: None,
        multisample: Default::default(),
        multiview_mask: None,
        cache: None,
    });
    let sampler = device.create_sampler(&wgpu::SamplerDescriptor::default()); // nearest
    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("blit"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::TextureView(
                    &texture.create_view(&Default::default()),
                ),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: wgpu::BindingResource::Sampler(&sampler),
            },
        ],
    });
    let view = frame.create_view(&Default::default());
    let row = frame_side * 4; // 128 px · 4 B: a multiple of 256
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("frame readback"),
        size: u64::from(row * frame_side),
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let draw = |enc: &mut wgpu::CommandEncoder| {
        let mut pass = enc.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("blit"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: &view,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                    store: wgpu::StoreOp::Store,
                },
            })],
            ..Default::default()
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.draw(0..3, 0..1);
    };

    // The frame loop: one denoising step and one frame of the host's per submission.
    let mut job = pipe.start(&gpu, &req)?;
    let steps = job.steps();
    let mut frames = 0;
    while !job.is_done() {
        let mut enc = device.create_command_encoder(&Default::default());
        job.encode_step(&mut enc)?;
        draw(&mut enc);
        queue.submit([enc.finish()]);
        frames += 1;
    }
    let latents = job.latents()?;
    job.finish_to_texture(&texture)?;

    let mut enc = device.create_command_encoder(&Default::default());
    draw(&mut enc);
    enc.copy_texture_to_buffer(
        frame.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &readback,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(row),
                rows_per_image: Some(frame_side),
            },
        },
        frame.size(),
    );
    queue.submit([enc.finish()]);
    readback.slice(..).map_async(wgpu::MapMode::Read, |_| {});
    device.poll(wgpu::PollType::wait_indefinitely())?;
    let frame = readback.slice(..).get_mapped_range()?.to_vec();
    Ok(Rendered {
        frame,
        side: frame_side,
        frames,
        steps,
        latents,
        host,
    })
}

fn write_frame(path: &Path, rgba: &[u8], side: u32) -> Result<()> {
    let rgb: Vec<f32> = rgba
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]].map(|v| f32::from(v) / 255.0))
        .collect();
    Ok(sd_wgpu::imageio::write_png(
        path,
        &rgb,
        side as usize,
        side as usize,
        &[],
    )?)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let prompt = args.first().map_or("a red sneaker", String::as_str);
    let out = PathBuf::from(args.get(1).map_or("frame.png", String::as_str));
    let r = render(prompt, 0)?;
    write_frame(&out, &r.frame, r.side)?;
    println!(
        "drew `{prompt}` over {} frames ({} steps, one per frame) and through a texture; \
         latents {} generate's ({} image values); wrote {}",
        r.frames,
        r.steps,
        if r.latents == r.host.latents {
            "equal"
        } else {
            "differ from"
        },
        r.host.image.len(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One frame per step; the latents after the frame loop are `generate`'s; the frame drawn
    /// from the engine's texture is `generate`'s image, 4× nearest (within 1 of 255 for the
    /// sRGB decode/encode round trip), in the prompted colour; the blit shader validates with
    /// naga.
    #[test]
    fn frame_from_the_texture_is_the_generated_image() {
        let module = naga::front::wgsl::parse_str(include_str!("blit.wgsl")).unwrap();
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap();

        let r = render("a red sneaker", 0)
            .unwrap_or_else(|e| panic!("needs a wgpu adapter (mesa-vulkan-drivers): {e}"));
        assert_eq!(r.frames, r.steps);
        assert_eq!(r.steps, r.host.steps_run);
        assert_eq!(r.latents, r.host.latents, "latents after the frame loop");
        let (rgba, side, host) = (r.frame, r.side, r.host.image);
        let path = std::env::temp_dir().join(format!("sd-wgpu-frame-{}.png", std::process::id()));
        write_frame(&path, &rgba, side).unwrap();
        let (w, h, png) = sd_wgpu::imageio::read_image_rgb(&path).unwrap();
        assert_eq!((w as u32, h as u32), (side, side));
        let small = (side / ZOOM) as usize;
        let mut worst = 0f32;
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let got = png[(y * w + x) * 3 + c] * 255.0;
                    let want = (host[((y / 4) * small + x / 4) * 3 + c] * 255.0).round();
                    worst = worst.max((got - want).abs());
                }
            }
        }
        assert!(
            worst <= 1.0,
            "frame differs from the engine's image by {worst}/255"
        );
        let voc = sd_wgpu::fashion::Vocabulary::load(&PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/assets/fashion-model"
        )))
        .unwrap();
        let colour = voc.garment_colour(&png).map(|c| voc.colours[c].clone());
        assert_eq!(colour.as_deref(), Some("red"));
        let _ = std::fs::remove_file(&path);
    }
}
