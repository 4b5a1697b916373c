//! Inference inside a graphics app: the app owns the device and keeps its
//! pictures in a texture atlas; shadergrad loads a trained classifier onto
//! that device, reads the atlas's tiles straight into a batch with one
//! kernel (no trip through the host) and classifies them.
//!
//!     shadergrad train cifar10 --out runs/cifar      # or `train images`
//!     cargo run --release --example texture_inference -- \
//!         runs/cifar/checkpoint.safetensors photo1.jpg photo2.png ...
//!
//! Prints each image's three most probable classes.

use std::error::Error;
use std::path::{Path, PathBuf};

use shadergrad::embed::{self, TextureRead};
use shadergrad::io::checkpoint;
use shadergrad::models::image::{top_k, ImagePipeline};
use shadergrad::nn::Module;
use shadergrad::{with_device, Device};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [checkpoint_path, images @ ..] = args.as_slice() else {
        return Err("usage: texture_inference CHECKPOINT IMAGE...".into());
    };
    if images.is_empty() {
        return Err("usage: texture_inference CHECKPOINT IMAGE... (no images given)".into());
    }

    // The application's device.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("app"),
        // The adapter's own limits: larger tensors than WebGPU's defaults.
        required_limits: adapter.limits(),
        ..Default::default()
    }))?;
    let gpu = Device::from_wgpu(device.clone(), queue.clone(), adapter.get_info())?;

    // The classifier, its weights on the app's device.
    let ck = checkpoint::load(checkpoint_path)?;
    let pipeline = ImagePipeline::from_metadata(&ck.metadata, checkpoint_path)?;
    let mut model = with_device(gpu, || -> shadergrad::Result<_> {
        let model = pipeline.build()?;
        ck.restore(&model, checkpoint_path)?;
        Ok(model)
    })?;
    model.set_training(false);
    let (h, w) = pipeline.size;
    println!(
        "{} ({}x{}, {} classes) on {}",
        pipeline.model,
        w,
        h,
        pipeline.classes.len(),
        gpu.describe()
    );

    // The app's atlas: every picture, fitted to the model's input, in one
    // rgba8unorm texture, as a renderer would keep thumbnails.
    let atlas = atlas(&device, &queue, &pipeline, images, (w as u32, h as u32))?;

    // The tiles as one batch [n, 3, h, w] in [0, 1], on the device.
    let batch = embed::read_texture(
        gpu,
        &atlas,
        &TextureRead {
            channels: 3,
            size: Some((w as u32, h as u32)),
            images: Some(images.len()),
            columns: Some(COLUMNS),
            ..Default::default()
        },
    )?;
    let probs = shadergrad::no_grad(|| model.forward(&batch)?.softmax(1)?.to_vec())?;
    for (path, p) in images.iter().zip(probs.chunks(pipeline.classes.len())) {
        let best: Vec<String> = top_k(p, 3)
            .into_iter()
            .map(|(c, q)| format!("{} {:.1}%", pipeline.classes[c], q * 100.0))
            .collect();
        println!("{}: {}", path.display(), best.join(", "));
    }
    Ok(())
}

const COLUMNS: usize = 8;

/// A texture holding `paths` as tiles of `size`, `COLUMNS` to a row.
fn atlas(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    pipeline: &ImagePipeline,
    paths: &[PathBuf],
    (w, h): (u32, u32),
) -> Result<wgpu::Texture, Box<dyn Error>> {
    let (aw, ah) = embed::grid_size(paths.len(), h as usize, w as usize, Some(COLUMNS), 0);
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("atlas"),
        size: wgpu::Extent3d {
            width: aw as u32,
            height: ah as u32,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    for (i, path) in paths.iter().enumerate() {
        let rgba = rgba_tile(pipeline, path)?;
        let (col, row) = ((i % COLUMNS) as u32, (i / COLUMNS) as u32);
        queue.write_texture(
            wgpu::TexelCopyTextureInfo {
                texture: &texture,
                mip_level: 0,
                origin: wgpu::Origin3d {
                    x: col * w,
                    y: row * h,
                    z: 0,
                },
                aspect: wgpu::TextureAspect::All,
            },
            &rgba,
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(w * 4),
                rows_per_image: None,
            },
            wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
        );
    }
    Ok(texture)
}

/// One image fitted as the model was trained (`load_image`: [3, h, w]
/// planes), interleaved into RGBA texels.
fn rgba_tile(pipeline: &ImagePipeline, path: &Path) -> shadergrad::Result<Vec<u8>> {
    let planes = pipeline.load_image(path)?;
    let n = planes.len() / 3;
    Ok((0..n)
        .flat_map(|p| [planes[p], planes[n + p], planes[2 * n + p], 255])
        .collect())
}
