//! shadergrad inside a graphics application: on the application's own
//! `wgpu::Device`, with tensors in its buffers and images in its textures.
//! The guide is `docs/graphics-apps.md`.
//!
//! # The rules
//!
//! - **The device.** [`Device::from_wgpu`] adopts the app's device and
//!   queue. It checks the device's limits against [`required_limits`] and
//!   names each one that falls short; no feature is required (`SHADER_F16`,
//!   `SUBGROUP` and `TIMESTAMP_QUERY` are used when enabled). Register a
//!   device once and keep the [`Device`] (it is `Copy`). shadergrad installs
//!   the device's lost callback and uncaptured-error handler, so a lost
//!   device or a wgpu error becomes an [`Error`] instead of a panic.
//! - **The queue.** shadergrad submits only on that queue, and only inside
//!   its own calls: a `realize` (or `to_vec`, `item`, an optimizer step)
//!   submits its work once before it returns; [`write_texture`] and
//!   [`read_texture`] submit one dispatch each. Nothing is submitted later
//!   or from another thread behind the app's back.
//! - **Ordering.** wgpu runs a queue's submissions in order, so whatever the
//!   app submits after one of these calls returns sees its results (a
//!   render pass sampling the texture `write_texture` filled, a copy from a
//!   shared buffer), and a realize sees what the app submitted or wrote
//!   with `queue.write_buffer`/`write_texture` before it. Only reading on
//!   the host (`to_vec`, `item`) waits for the GPU; `realize` does not.
//! - **Buffers.** [`wrap_buffer`] sees an app buffer as a tensor without a
//!   copy; shadergrad never writes into it or reuses it. [`share_buffer`]
//!   hands a realized tensor's buffer to the app without a copy; from then
//!   on that buffer is never reused for other data, so the app may keep its
//!   clone as long as it likes (the memory is freed when both sides have
//!   dropped it).
//! - **Tensors are values.** A tensor built from an app buffer reads the
//!   buffer when a computation that needs it runs; a result already
//!   computed keeps its value. To see new contents, build the computation
//!   again (graphs are cheap) and realize it.
//!
//! Every misuse (a buffer without `STORAGE` usage or too small for the
//! shape, a texture of a format or size we cannot use, a tensor of another
//! device, a buffer or texture of another wgpu device) is an [`Error`]
//! naming the problem; nothing here panics inside the app's frame loop.

use crate::backend::gpu::kernels::texture::{self, Grid};
use crate::backend::gpu::{self, device::Context, GpuBuffer};
use crate::backend::{Storage, Value};
use crate::shape::{checked_numel, Layout};
use crate::{DType, Device, Error, Result, Tensor};
use std::sync::Arc;

/// The limits shadergrad's kernels need of a device: WebGPU's downlevel
/// defaults, raised where our kernels go further (eight storage buffers in
/// one kernel, 256-invocation workgroups). Ask for these (or the adapter's
/// own limits, which give larger tensors) in `DeviceDescriptor::required_limits`.
pub fn required_limits() -> wgpu::Limits {
    wgpu::Limits {
        max_storage_buffers_per_shader_stage: 8,
        max_storage_textures_per_shader_stage: 1,
        max_sampled_textures_per_shader_stage: 1,
        max_compute_workgroup_storage_size: 16_384,
        max_compute_invocations_per_workgroup: 256,
        max_compute_workgroup_size_x: 256,
        max_compute_workgroup_size_y: 16,
        max_compute_workgroup_size_z: 1,
        max_compute_workgroups_per_dimension: 65_535,
        max_uniform_buffer_binding_size: 16 << 10,
        max_storage_buffer_binding_size: 16 << 20,
        max_buffer_size: 16 << 20,
        max_bind_groups: 1,
        max_bindings_per_bind_group: 9,
        ..wgpu::Limits::downlevel_defaults()
    }
}

/// Each limit of `have` below [`required_limits`], as
/// `"name: the device has X, shadergrad needs Y"`.
pub(crate) fn missing_limits(have: &wgpu::Limits) -> Vec<String> {
    let need = required_limits();
    let mut missing = Vec::new();
    let mut at_least = |name: &str, have: u64, need: u64| {
        if have < need {
            missing.push(format!(
                "{name}: the device has {have}, shadergrad needs {need}"
            ));
        }
    };
    macro_rules! check {
        ($($field:ident),*) => {
            $(at_least(stringify!($field), have.$field as u64, need.$field as u64);)*
        };
    }
    check!(
        max_storage_buffers_per_shader_stage,
        max_storage_textures_per_shader_stage,
        max_sampled_textures_per_shader_stage,
        max_compute_workgroup_storage_size,
        max_compute_invocations_per_workgroup,
        max_compute_workgroup_size_x,
        max_compute_workgroup_size_y,
        max_compute_workgroup_size_z,
        max_compute_workgroups_per_dimension,
        max_uniform_buffer_binding_size,
        max_storage_buffer_binding_size,
        max_buffer_size,
        max_bind_groups,
        max_bindings_per_bind_group
    );
    missing
}

fn context_of(op: &'static str, device: Device) -> Result<Arc<Context>> {
    match device {
        Device::Gpu(id) => gpu::device::context(id),
        Device::Cpu => Err(Error::param(
            op,
            "the cpu backend has no wgpu buffers or textures; register the app's device with \
             Device::from_wgpu and use that",
        )),
    }
}

fn check_same_device(op: &'static str, tensor: &Tensor, device: Device) -> Result<()> {
    if *tensor.device() != device {
        return Err(Error::param(
            op,
            format!(
                "the tensor lives on {}, not on {device}; move it with .to({device}) (a copy \
                 through the host) or build it under with_device({device})",
                tensor.device()
            ),
        ));
    }
    Ok(())
}

/// The app's `buffer` seen as a tensor of `shape` and `dtype` whose first
/// element is at `byte_offset`, without a copy. The buffer needs `STORAGE`
/// usage (and `COPY_SRC` to read the tensor back with `to_vec`), a size that
/// is a multiple of 4 and at most the device's largest storage binding
/// (kernels bind it whole), and room for the shape after the offset.
///
/// shadergrad only reads it: results go to buffers of its own. A
/// computation built on the tensor reads the buffer's contents at the
/// time it runs, so a value the app writes is seen by the next realize.
pub fn wrap_buffer(
    device: Device,
    buffer: &wgpu::Buffer,
    shape: &[usize],
    dtype: DType,
    byte_offset: u64,
) -> Result<Tensor> {
    const OP: &str = "wrap_buffer";
    let ctx = context_of(OP, device)?;
    let usage = buffer.usage();
    if !usage.contains(wgpu::BufferUsages::STORAGE) {
        return Err(Error::param(
            OP,
            format!(
                "the buffer's usage is {usage:?}, without STORAGE: kernels cannot read it; \
                 create it with BufferUsages::STORAGE (and COPY_SRC to read it back)"
            ),
        ));
    }
    let n = checked_numel(OP, shape)?;
    let size = buffer.size();
    if !byte_offset.is_multiple_of(4) || !size.is_multiple_of(4) {
        return Err(Error::param(
            OP,
            format!(
                "byte offset {byte_offset} and buffer size {size} must be multiples of 4 (one \
                 {dtype} element)"
            ),
        ));
    }
    let end = (n as u64)
        .checked_mul(4)
        .and_then(|b| b.checked_add(byte_offset));
    if end.is_none_or(|end| end > size) {
        return Err(Error::shape(
            OP,
            &[shape],
            format!(
                "{n} {dtype} elements from byte {byte_offset} need {} bytes, but the buffer has \
                 {size}; pass a smaller shape or a larger buffer",
                end.map_or("more than 2^64".into(), |e| e.to_string())
            ),
        ));
    }
    let limit = ctx
        .limits
        .max_storage_buffer_binding_size
        .min(ctx.limits.max_buffer_size);
    if size > limit {
        return Err(Error::OutOfMemory(format!(
            "{OP}: the buffer has {size} bytes, past the largest storage binding of {} ({limit} \
             bytes); kernels bind buffers whole, so use a buffer of at most that size",
            ctx.name
        )));
    }
    probe_binding(&ctx, buffer)?;
    let value = Value {
        storage: Arc::new(Storage::Gpu(GpuBuffer::app(
            ctx.clone(),
            buffer.clone(),
            (size / 4) as usize,
            dtype,
        ))),
        layout: Layout {
            offset: (byte_offset / 4) as usize,
            ..Layout::contiguous(shape)
        },
    };
    Ok(Tensor::from_value(value, false, device))
}

/// Bind `buffer` once, so a buffer of another wgpu device is an error now
/// (naming it) rather than a failed realize later.
fn probe_binding(ctx: &Context, buffer: &wgpu::Buffer) -> Result<()> {
    let _turn = gpu::device::gl_turn(ctx.info.backend);
    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let layout = ctx
        .device
        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("wrap_buffer probe"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: true },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }],
        });
    let _group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("wrap_buffer probe"),
        layout: &layout,
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: buffer.as_entire_binding(),
        }],
    });
    match pollster::block_on(scope.pop()) {
        None => Ok(()),
        Some(e) => Err(Error::param(
            "wrap_buffer",
            format!(
                "{} cannot bind this buffer ({e}); is it from another wgpu device?",
                ctx.name
            ),
        )),
    }
}

/// A realized tensor's buffer, handed to the application without a copy.
///
/// The elements are dense and row-major from `byte_offset`. The buffer is
/// never reused by shadergrad for other data once shared, so `buffer` (a
/// cheap clone of the `wgpu::Buffer`) may be kept for as long as the app
/// likes; the memory is freed once the tensor and every clone are gone.
#[derive(Clone, Debug)]
pub struct SharedBuffer {
    /// The buffer (usage `STORAGE | COPY_SRC | COPY_DST` when shadergrad
    /// made it; the app's own usage when it was wrapped).
    pub buffer: wgpu::Buffer,
    /// Where the first element starts.
    pub byte_offset: u64,
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// Its element type (4 bytes each).
    pub dtype: DType,
}

impl SharedBuffer {
    /// Bytes the elements take, from `byte_offset`.
    pub fn byte_len(&self) -> u64 {
        crate::shape::numel(&self.shape) as u64 * 4
    }
}

/// The buffer holding `tensor` (realized first if needed), for the app to
/// bind or copy from. A dense tensor gives its own buffer; a view that is
/// not dense (a permutation, a broadcast) or a cached constant gives a
/// dense copy of its own. A tensor made by [`wrap_buffer`] gives the app's
/// buffer back, the same `wgpu::Buffer`.
pub fn share_buffer(tensor: &Tensor) -> Result<SharedBuffer> {
    let ctx = context_of("share_buffer", *tensor.device())?;
    let value = gpu::shareable(&ctx, &tensor.value()?)?;
    let Storage::Gpu(b) = value.storage.as_ref() else {
        return Err(Error::param("share_buffer", "internal: a host value"));
    };
    Ok(SharedBuffer {
        buffer: b.raw().clone(),
        byte_offset: value.layout.offset as u64 * 4,
        shape: value.layout.shape.clone(),
        dtype: b.dtype,
    })
}

/// How image values map to a texture's `[0, 1]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ValueRange {
    /// Values in `[0, 1]`, stored as they are.
    #[default]
    Unit,
    /// Values in `[-1, 1]` (a tanh output): `(v + 1) / 2` on the way in,
    /// `2 t - 1` on the way out.
    Signed,
}

/// Where an image tensor keeps its channels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChannelOrder {
    /// `[C, H, W]` (or `[N, C, H, W]`): what the convolution layers use.
    #[default]
    First,
    /// `[H, W, C]` (or `[N, H, W, C]`).
    Last,
}

/// How [`write_texture`] lays images into a texture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextureWrite {
    /// The tensor's value range.
    pub range: ValueRange,
    /// The channel axis; `None` finds it from the shape (the one axis of
    /// size 3 or 4 at either end), an error when both ends could be.
    pub order: Option<ChannelOrder>,
    /// Images per row of a batch's grid; `None`: `ceil(sqrt(N))`.
    pub columns: Option<usize>,
    /// Pixels between the tiles of a grid (opaque black, as are empty cells).
    pub padding: u32,
    /// The top-left texel of the grid.
    pub origin: (u32, u32),
}

/// What [`read_texture`] reads from a texture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextureRead {
    /// The range the tensor's values get.
    pub range: ValueRange,
    /// The channel axis of the tensor made.
    pub order: ChannelOrder,
    /// 3 (RGB, alpha dropped) or 4 (RGBA).
    pub channels: usize,
    /// The top-left texel read.
    pub origin: (u32, u32),
    /// One image's (width, height); `None`: the texture from `origin` on.
    pub size: Option<(u32, u32)>,
    /// `None`: one image, `[C, H, W]`. `Some(n)`: `n` tiles of a grid laid
    /// out as [`write_texture`] lays them, `[n, C, H, W]`.
    pub images: Option<usize>,
    /// Tiles per row when `images` is set; `None`: `ceil(sqrt(n))`.
    pub columns: Option<usize>,
    /// Pixels between tiles.
    pub padding: u32,
}

impl Default for TextureRead {
    fn default() -> Self {
        TextureRead {
            range: ValueRange::Unit,
            order: ChannelOrder::First,
            channels: 4,
            origin: (0, 0),
            size: None,
            images: None,
            columns: None,
            padding: 0,
        }
    }
}

/// Texels `(width, height)` a grid of `images` tiles of `height` x `width`
/// takes, `columns` to a row (`None`: `ceil(sqrt(images))`) and `padding`
/// apart: the least texture size [`write_texture`] needs for it.
pub fn grid_size(
    images: usize,
    height: usize,
    width: usize,
    columns: Option<usize>,
    padding: u32,
) -> (u64, u64) {
    let columns = columns.unwrap_or_else(|| default_columns(images));
    Grid {
        images: images.min(u32::MAX as usize) as u32,
        channels: 4,
        height: height.min(u32::MAX as usize) as u32,
        width: width.min(u32::MAX as usize) as u32,
        channels_last: false,
        signed_range: false,
        columns: columns.clamp(1, u32::MAX as usize) as u32,
        padding,
        origin: (0, 0),
    }
    .region()
}

fn default_columns(images: usize) -> usize {
    ((images as f64).sqrt().ceil() as usize).max(1)
}

fn to_u32(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::param(op, format!("{what} {v} does not fit a texture")))
}

/// The grid of `n` images of `c` channels, `h` x `w`, that `op` lays out
/// (`columns` to a row, `ceil(sqrt(n))` when `None`), each size checked to
/// fit the kernel's 32-bit parameters.
fn tiles(
    op: &'static str,
    (n, c, h, w): (usize, usize, usize, usize),
    order: ChannelOrder,
    range: ValueRange,
    columns: Option<usize>,
    padding: u32,
    origin: (u32, u32),
) -> Result<Grid> {
    Ok(Grid {
        images: to_u32(op, "image count", n)?,
        channels: to_u32(op, "channels", c)?,
        height: to_u32(op, "height", h)?,
        width: to_u32(op, "width", w)?,
        channels_last: order == ChannelOrder::Last,
        signed_range: range == ValueRange::Signed,
        columns: to_u32(
            op,
            "columns",
            columns.unwrap_or_else(|| default_columns(n)).max(1),
        )?,
        padding,
        origin,
    })
}

/// Is `texture` a plain 2-D texture with `usage`, and does `grid` fit it?
fn check_texture(
    op: &'static str,
    texture: &wgpu::Texture,
    usage: wgpu::TextureUsages,
    grid: &Grid,
) -> Result<()> {
    if texture.dimension() != wgpu::TextureDimension::D2 || texture.sample_count() != 1 {
        return Err(Error::param(
            op,
            format!(
                "the texture is {:?} with {} samples; images go to 2-D single-sample textures",
                texture.dimension(),
                texture.sample_count()
            ),
        ));
    }
    if !texture.usage().contains(usage) {
        return Err(Error::param(
            op,
            format!(
                "the texture's usage is {:?}, without {usage:?}; create it with \
                 TextureUsages::{usage:?}",
                texture.usage()
            ),
        ));
    }
    let (w, h) = grid.region();
    let (x, y) = (grid.origin.0 as u64, grid.origin.1 as u64);
    if x + w > texture.width() as u64 || y + h > texture.height() as u64 {
        return Err(Error::param(
            op,
            format!(
                "{} image(s) of {}x{} (width x height) in {} column(s), {} px apart, take \
                 {w}x{h} texels from ({x}, {y}), past the {}x{} texture; use a larger texture \
                 (embed::grid_size says how large), fewer images or another origin",
                grid.images,
                grid.width,
                grid.height,
                grid.columns,
                grid.padding,
                texture.width(),
                texture.height()
            ),
        ));
    }
    Ok(())
}

/// Write an f32 image tensor into the app's `texture` with one kernel:
/// `[3|4, H, W]` or `[H, W, 3|4]`, or a batch `[N, 3|4, H, W]` /
/// `[N, H, W, 3|4]` tiled into a grid (a sample sheet). The texture must be
/// `rgba8unorm` or `rgba16float` with `STORAGE_BINDING` usage; values are
/// clamped to the range, three channels get alpha 1.
///
/// Returns the submission index: the app's later submits on the queue see
/// the texture written (queue order); `device.poll` with it waits for it.
pub fn write_texture(
    device: Device,
    image: &Tensor,
    texture: &wgpu::Texture,
    opts: &TextureWrite,
) -> Result<wgpu::SubmissionIndex> {
    const OP: &str = "write_texture";
    let ctx = context_of(OP, device)?;
    check_same_device(OP, image, device)?;
    if image.dtype() != DType::F32 {
        return Err(Error::param(
            OP,
            format!(
                "images are f32 tensors, this one is {}; cast it first",
                image.dtype()
            ),
        ));
    }
    if texture::write_entry(texture.format()).is_none() {
        return Err(Error::param(
            OP,
            format!(
                "cannot write {:?} textures; use Rgba8Unorm or Rgba16Float (storage formats every \
                 WebGPU device has), and copy or render from it into other formats",
                texture.format()
            ),
        ));
    }
    let shape = image.shape();
    let (n, rest) = match shape.len() {
        3 => (1, shape),
        4 => (shape[0], &shape[1..]),
        _ => return Err(Error::shape(
            OP,
            &[shape],
            "an image is [C, H, W] or [H, W, C] (C = 3 or 4), a batch [N, C, H, W] or [N, H, W, C]",
        )),
    };
    let is_channels = |c: usize| c == 3 || c == 4;
    let order = match opts.order {
        Some(o) => o,
        None => match (is_channels(rest[0]), is_channels(rest[2])) {
            (true, false) => ChannelOrder::First,
            (false, true) => ChannelOrder::Last,
            (true, true) => {
                return Err(Error::shape(
                    OP,
                    &[shape],
                    "both the first and the last axis could be channels; say which with \
                     TextureWrite::order",
                ))
            }
            (false, false) => {
                return Err(Error::shape(
                    OP,
                    &[shape],
                    "no channel axis of size 3 or 4 at either end of the image",
                ))
            }
        },
    };
    let (c, h, w) = match order {
        ChannelOrder::First => (rest[0], rest[1], rest[2]),
        ChannelOrder::Last => (rest[2], rest[0], rest[1]),
    };
    if !is_channels(c) {
        return Err(Error::shape(
            OP,
            &[shape],
            format!("{c} channels; textures take 3 (RGB) or 4 (RGBA)"),
        ));
    }
    let grid = tiles(
        OP,
        (n, c, h, w),
        order,
        opts.range,
        opts.columns,
        opts.padding,
        opts.origin,
    )?;
    check_texture(OP, texture, wgpu::TextureUsages::STORAGE_BINDING, &grid)?;
    if image.numel() == 0 {
        return Ok(ctx.queue.submit([]));
    }
    let mut value = image.value()?;
    if !value.layout.is_contiguous() {
        value = image.contiguous().value()?;
    }
    texture::write(&ctx, &gpu::on_device(&ctx, &value)?, &grid, texture)
}

/// Read the app's `texture` (`rgba8unorm`, `bgra8unorm`, `rgba16float` or
/// `rgba32float`, with `TEXTURE_BINDING` usage) into a new f32 tensor on
/// `device`, with one kernel and no trip through the host: `[C, H, W]`, or
/// `[N, C, H, W]` from a grid of tiles (channels last with
/// [`ChannelOrder::Last`]). `bgra8unorm` comes out in RGB order.
pub fn read_texture(device: Device, texture: &wgpu::Texture, opts: &TextureRead) -> Result<Tensor> {
    const OP: &str = "read_texture";
    let ctx = context_of(OP, device)?;
    use wgpu::TextureFormat as F;
    if !matches!(
        texture.format(),
        F::Rgba8Unorm | F::Bgra8Unorm | F::Rgba16Float | F::Rgba32Float
    ) {
        return Err(Error::param(
            OP,
            format!(
                "cannot read {:?} textures; readable formats are Rgba8Unorm, Bgra8Unorm, \
                 Rgba16Float and Rgba32Float",
                texture.format()
            ),
        ));
    }
    if opts.channels != 3 && opts.channels != 4 {
        return Err(Error::param(
            OP,
            format!("{} channels asked; read 3 (RGB) or 4 (RGBA)", opts.channels),
        ));
    }
    let (width, height) = opts.size.unwrap_or((
        texture.width().saturating_sub(opts.origin.0),
        texture.height().saturating_sub(opts.origin.1),
    ));
    let n = opts.images.unwrap_or(1);
    let grid = tiles(
        OP,
        (n, opts.channels, height as usize, width as usize),
        opts.order,
        opts.range,
        opts.columns,
        opts.padding,
        opts.origin,
    )?;
    check_texture(OP, texture, wgpu::TextureUsages::TEXTURE_BINDING, &grid)?;
    let (c, h, w) = (opts.channels, height as usize, width as usize);
    let mut shape = match opts.order {
        ChannelOrder::First => vec![c, h, w],
        ChannelOrder::Last => vec![h, w, c],
    };
    if opts.images.is_some() {
        shape.insert(0, n);
    }
    checked_numel(OP, &shape)?;
    let value = if grid.elements() == 0 {
        Value::f32(vec![], &shape)
    } else {
        texture::read(&ctx, texture, &grid, &shape)?
    };
    Ok(Tensor::from_value(value, false, device))
}
