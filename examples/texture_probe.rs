//! Development probe: the subgroup GEMM loop with its weight operand read from a storage
//! buffer (what the engine does) against the same loop reading it from an `rgba32float`
//! texture with `textureLoad`. On llvmpipe a storage-buffer load whose address differs
//! between lanes runs lane by lane with a bounds check and a branch per component, while a
//! texel fetch is a vector load per lane and a transpose. Not a benchmark of record.
//! `cargo run --release --example texture_probe`
use sd_wgpu::Gpu;
use wgpu::util::DeviceExt;

const SHADER: &str = r#"
struct P { m: u32, n: u32, k: u32, tiles_n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> c: array<vec4<f32>>;
#if TEX
@group(0) @binding(3) var bt: texture_2d<f32>;
fn load_b4(k: u32, n: u32) -> vec4<f32> { return textureLoad(bt, vec2<u32>(n >> 2u, k), 0); }
#else
@group(0) @binding(3) var<storage, read> bs: array<vec4<f32>>;
fn load_b4(k: u32, n: u32) -> vec4<f32> { return bs[(k * p.n + n) >> 2u]; }
#endif

fn step(acc: ptr<function, array<vec4<f32>, 16>>, x0: f32, x1: f32, bv: vec4<f32>) {
    (*acc)[0] = fma(vec4<f32>(subgroupBroadcast(x0, 0u)), bv, (*acc)[0]);
    (*acc)[1] = fma(vec4<f32>(subgroupBroadcast(x0, 1u)), bv, (*acc)[1]);
    (*acc)[2] = fma(vec4<f32>(subgroupBroadcast(x0, 2u)), bv, (*acc)[2]);
    (*acc)[3] = fma(vec4<f32>(subgroupBroadcast(x0, 3u)), bv, (*acc)[3]);
    (*acc)[4] = fma(vec4<f32>(subgroupBroadcast(x0, 4u)), bv, (*acc)[4]);
    (*acc)[5] = fma(vec4<f32>(subgroupBroadcast(x0, 5u)), bv, (*acc)[5]);
    (*acc)[6] = fma(vec4<f32>(subgroupBroadcast(x0, 6u)), bv, (*acc)[6]);
    (*acc)[7] = fma(vec4<f32>(subgroupBroadcast(x0, 7u)), bv, (*acc)[7]);
    (*acc)[8] = fma(vec4<f32>(subgroupBroadcast(x1, 0u)), bv, (*acc)[8]);
    (*acc)[9] = fma(vec4<f32>(subgroupBroadcast(x1, 1u)), bv, (*acc)[9]);
    (*acc)[10] = fma(vec4<f32>(subgroupBroadcast(x1, 2u)), bv, (*acc)[10]);
    (*acc)[11] = fma(vec4<f32>(subgroupBroadcast(x1, 3u)), bv, (*acc)[11]);
    (*acc)[12] = fma(vec4<f32>(subgroupBroadcast(x1, 4u)), bv, (*acc)[12]);
    (*acc)[13] = fma(vec4<f32>(subgroupBroadcast(x1, 5u)), bv, (*acc)[13]);
    (*acc)[14] = fma(vec4<f32>(subgroupBroadcast(x1, 6u)), bv, (*acc)[14]);
    (*acc)[15] = fma(vec4<f32>(subgroupBroadcast(x1, 7u)), bv, (*acc)[15]);
}

@compute @workgroup_size(8, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let tn = wid.x % p.tiles_n;
    let tm = wid.x / p.tiles_n;
    let m0 = tm * 16u;
    let n0 = tn * 32u + 4u * lane;
    let r0 = (m0 + lane) * p.k;
    let r1 = (m0 + 8u + lane) * p.k;
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < p.k; i += 4u) {
        let a0 = a[(r0 + i) >> 2u];
        let a1 = a[(r1 + i) >> 2u];
        for (var s = 0u; s < 4u; s++) {
            step(&acc, a0[s], a1[s], load_b4(i + s, n0));
        }
    }
    for (var r = 0u; r < 8u; r++) {
        c[((m0 + r) * p.n + n0) >> 2u] = acc[r];
        c[((m0 + 8u + r) * p.n + n0) >> 2u] = acc[8u + r];
    }
}
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = Gpu::new()?;
    let (dev, queue) = (gpu.device(), gpu.queue());
    println!("{}", gpu.adapter_info().name);
    let (m, n, k) = (1024u32, 1024u32, 1024u32);
    let a: Vec<f32> = (0..m * k).map(|i| ((i % 13) as f32) * 0.01).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i % 7) as f32) * 0.01).collect();
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let abuf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("a"),
        contents: bytemuck::cast_slice(&a),
        usage,
    });
    let bbuf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("b"),
        contents: bytemuck::cast_slice(&b),
        usage,
    });
    let cbuf = dev.create_buffer(&wgpu::BufferDescriptor {
        label: Some("c"),
        size: (m * n * 4) as u64,
        usage,
        mapped_at_creation: false,
    });
    let tiles_n = n / 32;
    let params = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("p"),
        contents: bytemuck::cast_slice(&[m, n, k, tiles_n]),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let tex = dev.create_texture_with_data(
        queue,
        &wgpu::TextureDescriptor {
            label: Some("b tex"),
            size: wgpu::Extent3d {
                width: n / 4,
                height: k,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage: wgpu::TextureUsages::TEXTURE_BINDING,
            view_formats: &[],
        },
        wgpu::util::TextureDataOrder::LayerMajor,
        bytemuck::cast_slice(&b),
    );
    let view = tex.create_view(&Default::default());
    for tex_variant in [false, true, false, true] {
        let src = if tex_variant {
            SHADER.replace("#if TEX\n", "").replace(
                &SHADER[SHADER.find("#else").unwrap()..SHADER.find("#endif").unwrap() + 6],
                "",
            )
        } else {
            SHADER
                .replace(
                    &SHADER[SHADER.find("#if TEX").unwrap()..SHADER.find("#else").unwrap() + 6],
                    "",
                )
                .replace("#endif\n", "")
        };
        let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: None,
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let pipe = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let b_entry = if tex_variant {
            wgpu::BindingResource::TextureView(&view)
        } else {
            bbuf.as_entire_binding()
        };
        let bg = dev.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: params.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: abuf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: cbuf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: b_entry,
                },
            ],
        });
        let mut best = f64::MAX;
        for _ in 0..4 {
            let mut enc = dev.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pipe);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(tiles_n * (m / 16), 1, 1);
            }
            let t = std::time::Instant::now();
            queue.submit([enc.finish()]);
            dev.poll(wgpu::PollType::wait_indefinitely())?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        let gf = 2.0 * (m as f64) * (n as f64) * (k as f64) / best / 1e9;
        let name = if tex_variant { "texture" } else { "storage" };
        println!("B from {name:8} {gf:6.2} GFLOP/s");
    }
    Ok(())
}
