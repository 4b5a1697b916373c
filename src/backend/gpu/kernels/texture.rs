//! texture.wgsl: image tensors into an application's storage textures and
//! back (see `crate::embed`). These run outside any realize: each is one
//! dispatch in its own submit, ordered on the queue after the realize that
//! made its input.

use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::backend::gpu::device::{gl_turn, Context};
use crate::backend::gpu::lock;
use crate::backend::gpu::pipeline::{kernel_params, Shader};
use crate::backend::{Storage, Value};
use crate::shape::Layout;
use crate::{DType, Error, Result};

kernel_params!(TextureParams {
    images: u32,
    channels: u32,
    height: u32,
    width: u32,
    channels_last: u32,
    signed_range: u32,
    columns: u32,
    padding: u32,
    origin_x: u32,
    origin_y: u32,
    region_w: u32,
    region_h: u32,
    offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
});

/// Invocations per workgroup side (`TILE` in texture.wgsl).
const TILE: u32 = 16;

/// Images tiled into a texture: `images` tiles of `height` x `width`,
/// `columns` to a row, `padding` pixels apart, the first at `origin`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    pub images: u32,
    pub channels: u32,
    pub height: u32,
    pub width: u32,
    pub channels_last: bool,
    pub signed_range: bool,
    pub columns: u32,
    pub padding: u32,
    pub origin: (u32, u32),
}

impl Grid {
    /// The grid's size in pixels (width, height).
    pub fn region(&self) -> (u64, u64) {
        let cols = self.columns.min(self.images).max(1) as u64;
        let rows = (self.images as u64)
            .div_ceil(self.columns.max(1) as u64)
            .max(1);
        let pad = self.padding as u64;
        (
            cols * self.width as u64 + (cols - 1) * pad,
            rows * self.height as u64 + (rows - 1) * pad,
        )
    }

    /// Elements of the tensor side.
    pub fn elements(&self) -> u64 {
        self.images as u64 * self.channels as u64 * self.height as u64 * self.width as u64
    }

    fn params(&self, offset: u32) -> TextureParams {
        let (w, h) = self.region();
        TextureParams {
            images: self.images,
            channels: self.channels,
            height: self.height,
            width: self.width,
            channels_last: self.channels_last as u32,
            signed_range: self.signed_range as u32,
            columns: self.columns.max(1),
            padding: self.padding,
            origin_x: self.origin.0,
            origin_y: self.origin.1,
            region_w: w as u32,
            region_h: h as u32,
            offset,
            ..Default::default()
        }
    }
}

/// The storage formats `write` has an entry point for.
pub(crate) fn write_entry(format: wgpu::TextureFormat) -> Option<(&'static str, u32)> {
    match format {
        wgpu::TextureFormat::Rgba8Unorm => Some(("write_rgba8unorm", 3)),
        wgpu::TextureFormat::Rgba16Float => Some(("write_rgba16float", 4)),
        _ => None,
    }
}

fn view(texture: &wgpu::Texture) -> wgpu::TextureView {
    texture.create_view(&wgpu::TextureViewDescriptor {
        label: Some("shadergrad texture"),
        dimension: Some(wgpu::TextureViewDimension::D2),
        base_mip_level: 0,
        mip_level_count: Some(1),
        base_array_layer: 0,
        array_layer_count: Some(1),
        ..Default::default()
    })
}

/// Run `record` in its own encoder and submit it, with the device's errors
/// (validation, out of memory) as values: nothing panics in the app's frame.
fn submit_one(
    ctx: &Context,
    op: &'static str,
    record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<wgpu::SubmissionIndex> {
    let _turn = gl_turn(ctx.info.backend);
    ctx.check_alive()?;
    let oom = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(op) });
    let recorded = record(&mut encoder);
    let index = ctx.queue.submit([encoder.finish()]);
    let v = pollster::block_on(validation.pop());
    let o = pollster::block_on(oom.pop());
    recorded?;
    if let Some(e) = o {
        return Err(Error::OutOfMemory(format!("{op} on {}: {e}", ctx.name)));
    }
    if let Some(e) = v {
        return Err(ctx.lost_or(Error::Device(format!(
            "{op} on {}: wgpu refused it ({e}); is the texture from this device?",
            ctx.name
        ))));
    }
    ctx.check_alive()?;
    Ok(index)
}

fn dispatch(
    encoder: &mut wgpu::CommandEncoder,
    pipeline: &wgpu::ComputePipeline,
    group: &wgpu::BindGroup,
    grid: &Grid,
) {
    let (w, h) = grid.region();
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: None,
        timestamp_writes: None,
    });
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, group, &[]);
    pass.dispatch_workgroups((w as u32).div_ceil(TILE), (h as u32).div_ceil(TILE), 1);
}

fn uniform(ctx: &Context, params: &TextureParams) -> wgpu::Buffer {
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("texture params"),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM,
        })
}

/// Write the dense f32 image tensor `src` into `texture` as `grid` says.
/// The caller has checked the format, usage and size.
pub(crate) fn write(
    ctx: &Arc<Context>,
    src: &Value,
    grid: &Grid,
    texture: &wgpu::Texture,
) -> Result<wgpu::SubmissionIndex> {
    let Storage::Gpu(buffer) = src.storage.as_ref() else {
        return Err(Error::param("write_texture", "internal: a host value"));
    };
    let Some((entry, binding)) = write_entry(texture.format()) else {
        return Err(Error::param("write_texture", "internal: unchecked format"));
    };
    let offset = u32::try_from(src.layout.offset)
        .map_err(|_| Error::param("write_texture", "the image starts past 2^32 elements"))?;
    let pipeline = ctx.pipeline(Shader::Texture, entry, &[])?;
    let params = uniform(ctx, &grid.params(offset));
    let target = view(texture);
    submit_one(ctx, "write_texture", |encoder| {
        let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("write_texture"),
            layout: &pipeline.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: params.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: buffer.raw().as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding,
                    resource: wgpu::BindingResource::TextureView(&target),
                },
            ],
        });
        dispatch(encoder, &pipeline.pipeline, &group, grid);
        Ok(())
    })
}

/// The read pipeline and its layout, made once per device. Its layout is
/// explicit: the texture binding takes unfilterable floats, so rgba32float
/// (not filterable without a feature) binds as well as the 8- and 16-bit
/// formats.
fn read_pipeline(ctx: &Context) -> Result<(wgpu::BindGroupLayout, wgpu::ComputePipeline)> {
    let mut cached = lock(&ctx.texture_read);
    if let Some(p) = cached.as_ref() {
        return Ok(p.clone());
    }
    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let layout = ctx
        .device
        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("read_texture"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                storage(2, false),
                wgpu::BindGroupLayoutEntry {
                    binding: 5,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Texture {
                        sample_type: wgpu::TextureSampleType::Float { filterable: false },
                        view_dimension: wgpu::TextureViewDimension::D2,
                        multisampled: false,
                    },
                    count: None,
                },
            ],
        });
    let pipeline_layout = ctx
        .device
        .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("read_texture"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
    let module = ctx
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(Shader::Texture.file()),
            source: wgpu::ShaderSource::Wgsl(Shader::Texture.source().into()),
        });
    let pipeline = ctx
        .device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("read_texture"),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("read_image"),
            compilation_options: Default::default(),
            cache: None,
        });
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(Error::Device(format!(
            "kernel texture.wgsl (entry read_image) failed to compile on {}: {e}",
            ctx.name
        )));
    }
    *cached = Some((layout.clone(), pipeline.clone()));
    Ok((layout, pipeline))
}

/// Read `grid` out of `texture` into a new dense f32 value of `shape`.
pub(crate) fn read(
    ctx: &Arc<Context>,
    texture: &wgpu::Texture,
    grid: &Grid,
    shape: &[usize],
) -> Result<Value> {
    let n = grid.elements() as usize;
    ctx.check_elements("read_texture", n)?;
    let out = ctx.alloc("read_texture", n, DType::F32)?;
    let (layout, pipeline) = read_pipeline(ctx)?;
    let params = uniform(ctx, &grid.params(0));
    let source = view(texture);
    submit_one(ctx, "read_texture", |encoder| {
        let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("read_texture"),
            layout: &layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: params.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: out.raw().as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 5,
                    resource: wgpu::BindingResource::TextureView(&source),
                },
            ],
        });
        dispatch(encoder, &pipeline, &group, grid);
        Ok(())
    })?;
    Ok(Value {
        storage: Arc::new(Storage::Gpu(out)),
        layout: Layout::contiguous(shape),
    })
}
