//! An application's own wgpu device, no window: shadergrad computes a batch
//! of images on it, writes them into the app's texture as one grid with one
//! kernel, and the app copies the texture out and saves it as a PNG.
//!
//!     cargo run --release --example headless_texture -- out.png
//!
//! The picture: 16 tiles of 64x64, a 4x4 grid 4 px apart on black. Each
//! tile is a plane wave whose direction turns with the tile (0 to 337.5
//! degrees, left to right, top to bottom) and whose frequency grows down
//! the grid, in red and blue a quarter turn apart; green is a radial ripple.

use std::error::Error;

use shadergrad::embed::{self, TextureWrite, ValueRange};
use shadergrad::{with_device, Device, Tensor};

const TILES: usize = 16;
const SIZE: usize = 64;
const PADDING: u32 = 4;

fn main() -> Result<(), Box<dyn Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: headless_texture OUT.png")?;

    // The application's device, made with plain wgpu as any renderer would.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("app"),
        required_limits: embed::required_limits().using_resolution(adapter.limits()),
        ..Default::default()
    }))?;
    let gpu = Device::from_wgpu(device.clone(), queue.clone(), adapter.get_info())?;
    println!("app device: {}", gpu.describe());

    // The images, [16, 3, 64, 64] in [-1, 1], computed on the app's device.
    let images = with_device(gpu, waves)?;

    let (width, height) = embed::grid_size(TILES, SIZE, SIZE, None, PADDING);
    let (width, height) = (width as u32, height as u32);
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("samples"),
        size: wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::STORAGE_BINDING
            | wgpu::TextureUsages::TEXTURE_BINDING
            | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let opts = TextureWrite {
        range: ValueRange::Signed,
        padding: PADDING,
        ..Default::default()
    };
    embed::write_texture(gpu, &images, &texture, &opts)?;

    // The app's side: copy the texture out (rows padded to 256 bytes), as
    // it would for a screenshot. Queue order puts this after the write.
    let row = (width * 4).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: (row * height) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&Default::default());
    encoder.copy_texture_to_buffer(
        texture.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &staging,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(row),
                rows_per_image: None,
            },
        },
        texture.size(),
    );
    queue.submit([encoder.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    device.poll(wgpu::PollType::Wait {
        submission_index: None,
        timeout: None,
    })?;
    rx.recv()??;
    let pixels: Vec<u8> = staging
        .get_mapped_range(..)?
        .chunks(row as usize)
        .flat_map(|r| r[..(width * 4) as usize].to_vec())
        .collect();
    let png = image::RgbaImage::from_raw(width, height, pixels).ok_or("pixel count")?;
    png.save(&out)?;
    println!("wrote {out}: {width}x{height}, {TILES} tiles of {SIZE}x{SIZE}");
    Ok(())
}

/// Plane waves and ripples as tensor ops, `[TILES, 3, SIZE, SIZE]` in [-1, 1].
fn waves() -> shadergrad::Result<Tensor> {
    let n = TILES as f32;
    let coord = Tensor::arange(0.0, SIZE as f32, 1.0)?.div_scalar(SIZE as f32 - 1.0);
    let x = coord.reshape(&[1, 1, 1, SIZE])?;
    let y = coord.reshape(&[1, 1, SIZE, 1])?;
    let tile = Tensor::arange(0.0, n, 1.0)?.reshape(&[TILES, 1, 1, 1])?;
    let angle = tile.mul_scalar(std::f32::consts::TAU / n);
    let freq = tile
        .div_scalar(4.0)
        .add_scalar(1.0)
        .mul_scalar(std::f32::consts::TAU);
    let wave = |phase: f32| -> shadergrad::Result<Tensor> {
        let along = x
            .mul(&angle.add_scalar(phase).cos())?
            .add(&y.mul(&angle.add_scalar(phase).sin())?)?;
        Ok(along.mul(&freq)?.sin())
    };
    let r2 = x
        .sub_scalar(0.5)
        .square()
        .add(&y.sub_scalar(0.5).square())?;
    let ripple = r2.sqrt().mul(&freq)?.mul_scalar(2.0).cos();
    let red = wave(0.0)?;
    let blue = wave(std::f32::consts::FRAC_PI_2)?;
    let green = ripple.expand(&[TILES, 1, SIZE, SIZE])?;
    Tensor::cat(&[red, green, blue], 1)
}
