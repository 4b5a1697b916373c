//! shadergrad inside a graphics app (issue 12): on a device the test
//! creates with plain wgpu, as an app would. Textures written from known
//! tensors give exact RGBA bytes per format, textures of each readable
//! format read back exactly, buffers are shared both ways without a copy,
//! and each misuse is an error that names it.

mod common;

use std::sync::OnceLock;

use shadergrad::embed::{self, ChannelOrder, SharedBuffer, TextureRead, TextureWrite, ValueRange};
use shadergrad::{with_device, DType, Device, Error, Tensor};

struct App {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter: wgpu::Adapter,
    ours: Device,
}

/// The app's device (one per test binary), or None without a GPU (see
/// `common::gpu_device`).
fn app() -> Option<&'static App> {
    static APP: OnceLock<Option<App>> = OnceLock::new();
    common::gpu_device()?;
    APP.get_or_init(|| {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&Default::default())).ok()?;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            required_limits: embed::required_limits(),
            ..Default::default()
        }))
        .expect("the adapter gives the limits shadergrad needs");
        let ours = Device::from_wgpu(device.clone(), queue.clone(), adapter.get_info())
            .expect("required_limits pass the check");
        Some(App {
            device,
            queue,
            adapter,
            ours,
        })
    })
    .as_ref()
}

fn texture(
    app: &App,
    format: wgpu::TextureFormat,
    w: u32,
    h: u32,
    usage: wgpu::TextureUsages,
) -> wgpu::Texture {
    app.device.create_texture(&wgpu::TextureDescriptor {
        label: Some("test"),
        size: wgpu::Extent3d {
            width: w,
            height: h,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage,
        view_formats: &[],
    })
}

/// The texture's texels as the app would copy them out: rows of w * bytes per texel.
fn texture_bytes(app: &App, tex: &wgpu::Texture) -> Vec<u8> {
    let bpp = tex.format().block_copy_size(None).expect("a color format");
    let (w, h) = (tex.width(), tex.height());
    let row = (w * bpp).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
    let staging = app.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (row * h) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = app.device.create_command_encoder(&Default::default());
    enc.copy_texture_to_buffer(
        tex.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &staging,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(row),
                rows_per_image: None,
            },
        },
        tex.size(),
    );
    app.queue.submit([enc.finish()]);
    let bytes = map(app, &staging, 0, (row * h) as u64);
    bytes
        .chunks(row as usize)
        .flat_map(|r| r[..(w * bpp) as usize].to_vec())
        .collect()
}

fn map(app: &App, buffer: &wgpu::Buffer, offset: u64, len: u64) -> Vec<u8> {
    buffer.map_async(wgpu::MapMode::Read, offset..offset + len, |r| {
        r.expect("maps")
    });
    app.device
        .poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: None,
        })
        .expect("polls");
    let out = buffer
        .get_mapped_range(offset..offset + len)
        .expect("mapped")
        .to_vec();
    buffer.unmap();
    out
}

/// The app reads a shared buffer itself: a copy into its own staging buffer.
fn app_reads(app: &App, shared: &SharedBuffer) -> Vec<f32> {
    let len = shared.byte_len();
    let staging = app.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: len.max(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = app.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(&shared.buffer, shared.byte_offset, &staging, 0, len);
    app.queue.submit([enc.finish()]);
    bytemuck::cast_slice(&map(app, &staging, 0, len)).to_vec()
}

const WRITE_USAGE: wgpu::TextureUsages = wgpu::TextureUsages::STORAGE_BINDING
    .union(wgpu::TextureUsages::COPY_SRC)
    .union(wgpu::TextureUsages::TEXTURE_BINDING);

/// A [C, H, W] image whose value at (c, y, x) is `f(c, y, x)`.
fn image(c: usize, h: usize, w: usize, f: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
    let mut v = Vec::new();
    for ci in 0..c {
        for y in 0..h {
            for x in 0..w {
                v.push(f(ci, y, x));
            }
        }
    }
    v
}

fn unorm8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

#[test]
fn an_image_written_into_rgba8unorm_gives_exact_bytes() {
    let Some(app) = app() else { return };
    // Whole steps of 1/255 (no rounding ties), values outside [0, 1] clamped.
    let (h, w) = (5, 7);
    let value = |c: usize, y: usize, x: usize| {
        (c as f32 * 110.0 + y as f32 * 13.0 + x as f32 * 7.0 - 20.0) / 255.0
    };
    let data = image(3, h, w, value);
    let tensor = with_device(app.ours, || Tensor::from_slice(&data, &[3, h, w])).unwrap();
    let tex = texture(
        app,
        wgpu::TextureFormat::Rgba8Unorm,
        w as u32,
        h as u32,
        WRITE_USAGE,
    );
    embed::write_texture(app.ours, &tensor, &tex, &TextureWrite::default()).unwrap();
    let got = texture_bytes(app, &tex);
    let mut want = Vec::new();
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                want.push(unorm8(value(c, y, x)));
            }
            want.push(255);
        }
    }
    assert_eq!(got, want);
}

#[test]
fn a_signed_batch_becomes_a_grid_in_rgba16float_with_exact_halves() {
    let Some(app) = app() else { return };
    // Three 4-channel images [N, H, W, C] in [-1, 1], two to a row, one
    // texel apart: the gaps and the empty fourth cell are opaque black.
    let (n, h, w, c) = (3usize, 3usize, 2usize, 4usize);
    let value = |i: usize, y: usize, x: usize, ch: usize| {
        ((i * 17 + y * 5 + x * 3 + ch * 11) % 33) as f32 / 16.0 - 1.0
    };
    let mut data = Vec::new();
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    data.push(value(i, y, x, ch));
                }
            }
        }
    }
    let tensor = with_device(app.ours, || Tensor::from_slice(&data, &[n, h, w, c])).unwrap();
    let (gw, gh) = embed::grid_size(n, h, w, Some(2), 1);
    assert_eq!((gw, gh), (5, 7));
    let tex = texture(app, wgpu::TextureFormat::Rgba16Float, 6, 8, WRITE_USAGE);
    let opts = TextureWrite {
        range: ValueRange::Signed,
        order: Some(ChannelOrder::Last),
        columns: Some(2),
        padding: 1,
        origin: (1, 1),
    };
    embed::write_texture(app.ours, &tensor, &tex, &opts).unwrap();
    let got: Vec<u16> = bytemuck::cast_slice(&texture_bytes(app, &tex)).to_vec();
    let half = |v: f32| half::f16::from_f32(v).to_bits();
    let zero = [0u16; 4];
    let black = [half(0.0), half(0.0), half(0.0), half(1.0)];
    for ty in 0..8usize {
        for tx in 0..6usize {
            let texel = &got[(ty * 6 + tx) * 4..][..4];
            let want = if tx == 0 || ty == 0 {
                zero // outside the grid: untouched
            } else {
                let (gx, gy) = (tx - 1, ty - 1);
                let (col, x, row, y) = (gx / (w + 1), gx % (w + 1), gy / (h + 1), gy % (h + 1));
                let i = row * 2 + col;
                if x == w || y == h || i >= n {
                    black
                } else {
                    std::array::from_fn(|ch| half((value(i, y, x, ch) + 1.0) / 2.0))
                }
            };
            assert_eq!(texel, want, "texel ({tx}, {ty})");
        }
    }
}

#[test]
fn each_readable_format_reads_back_exactly() {
    let Some(app) = app() else { return };
    let (w, h) = (3u32, 2u32);
    let texels = (w * h) as usize;
    let bytes8: Vec<u8> = (0..texels * 4).map(|i| (i * 37 % 256) as u8).collect();
    let cases: Vec<(wgpu::TextureFormat, Vec<u8>, Vec<[f32; 4]>)> = vec![
        (
            wgpu::TextureFormat::Rgba8Unorm,
            bytes8.clone(),
            bytes8
                .chunks(4)
                .map(|p| std::array::from_fn(|c| p[c] as f32 / 255.0))
                .collect(),
        ),
        (
            wgpu::TextureFormat::Bgra8Unorm,
            bytes8.clone(),
            bytes8
                .chunks(4)
                .map(|p| [p[2], p[1], p[0], p[3]].map(|b| b as f32 / 255.0))
                .collect(),
        ),
        {
            let v: Vec<f32> = (0..texels * 4).map(|i| i as f32 / 8.0 - 1.0).collect();
            let halves: Vec<u16> = v
                .iter()
                .map(|&x| half::f16::from_f32(x).to_bits())
                .collect();
            (
                wgpu::TextureFormat::Rgba16Float,
                bytemuck::cast_slice(&halves).to_vec(),
                v.chunks(4).map(|p| [p[0], p[1], p[2], p[3]]).collect(),
            )
        },
        {
            let v: Vec<f32> = (0..texels * 4).map(|i| (i as f32).sin() * 3.0).collect();
            (
                wgpu::TextureFormat::Rgba32Float,
                bytemuck::cast_slice(&v).to_vec(),
                v.chunks(4).map(|p| [p[0], p[1], p[2], p[3]]).collect(),
            )
        },
    ];
    for (format, bytes, rgba) in cases {
        let tex = texture(
            app,
            format,
            w,
            h,
            wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        );
        let bpp = format.block_copy_size(None).unwrap();
        app.queue.write_texture(
            tex.as_image_copy(),
            &bytes,
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(w * bpp),
                rows_per_image: None,
            },
            tex.size(),
        );
        // Channels first, RGBA.
        let t = embed::read_texture(app.ours, &tex, &TextureRead::default()).unwrap();
        assert_eq!(t.shape(), &[4, h as usize, w as usize], "{format:?}");
        let got = t.to_vec().unwrap();
        for (p, want) in rgba.iter().enumerate() {
            for c in 0..4 {
                let g = got[c * texels + p];
                assert!(
                    (g - want[c]).abs() <= 1e-6 * want[c].abs().max(1.0),
                    "{format:?} texel {p} channel {c}: {g} vs {}",
                    want[c]
                );
            }
        }
        // Channels last, RGB, in [-1, 1].
        let opts = TextureRead {
            order: ChannelOrder::Last,
            channels: 3,
            range: ValueRange::Signed,
            ..Default::default()
        };
        let t = embed::read_texture(app.ours, &tex, &opts).unwrap();
        assert_eq!(t.shape(), &[h as usize, w as usize, 3]);
        let got = t.to_vec().unwrap();
        for (p, want) in rgba.iter().enumerate() {
            for c in 0..3 {
                let (g, want) = (got[p * 3 + c], want[c] * 2.0 - 1.0);
                assert!(
                    (g - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "{format:?}: {g} vs {want}"
                );
            }
        }
    }
}

#[test]
fn a_batch_written_as_a_grid_reads_back_as_the_same_batch() {
    let Some(app) = app() else { return };
    // Multiples of 1/64 survive rgba16float exactly.
    let (n, h, w) = (5usize, 4usize, 3usize);
    let data: Vec<f32> = (0..n * 3 * h * w)
        .map(|i| (i % 129) as f32 / 64.0 - 1.0)
        .collect();
    let batch = with_device(app.ours, || Tensor::from_slice(&data, &[n, 3, h, w])).unwrap();
    let opts = TextureWrite {
        range: ValueRange::Signed,
        order: Some(ChannelOrder::First),
        padding: 2,
        ..Default::default()
    };
    let (gw, gh) = embed::grid_size(n, h, w, None, 2);
    let tex = texture(
        app,
        wgpu::TextureFormat::Rgba16Float,
        gw as u32,
        gh as u32,
        WRITE_USAGE,
    );
    embed::write_texture(app.ours, &batch, &tex, &opts).unwrap();
    let back = embed::read_texture(
        app.ours,
        &tex,
        &TextureRead {
            range: ValueRange::Signed,
            channels: 3,
            size: Some((w as u32, h as u32)),
            images: Some(n),
            padding: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(back.shape(), &[n, 3, h, w]);
    assert_eq!(back.to_vec().unwrap(), data);
}

#[test]
fn buffers_are_shared_both_ways_without_a_copy() {
    let Some(app) = app() else { return };
    let buffer = app.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app data"),
        size: 64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let first: Vec<f32> = (0..16).map(|i| i as f32).collect();
    app.queue
        .write_buffer(&buffer, 0, bytemuck::cast_slice(&first));
    // Six elements from byte 8 as [2, 3].
    let x = embed::wrap_buffer(app.ours, &buffer, &[2, 3], DType::F32, 8).unwrap();
    assert_eq!(x.to_vec().unwrap(), vec![2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    // The same wgpu::Buffer comes back.
    let back = embed::share_buffer(&x).unwrap();
    assert!(
        back.buffer == buffer,
        "a wrapped tensor gives the app its own buffer"
    );
    assert_eq!((back.byte_offset, back.shape.clone()), (8, vec![2, 3]));

    // A result handed over: the app copies it out itself.
    let y = x.mul_scalar(2.0).add_scalar(1.0);
    let shared = embed::share_buffer(&y).unwrap();
    assert_eq!(shared.shape, vec![2, 3]);
    assert_eq!(
        app_reads(app, &shared),
        vec![5.0, 7.0, 9.0, 11.0, 13.0, 15.0]
    );

    // The app writes; the next realize reads what it wrote.
    let second: Vec<f32> = (0..16).map(|i| -(i as f32)).collect();
    app.queue
        .write_buffer(&buffer, 0, bytemuck::cast_slice(&second));
    let y2 = x.mul_scalar(2.0).add_scalar(1.0);
    assert_eq!(
        y2.to_vec().unwrap(),
        vec![-3.0, -5.0, -7.0, -9.0, -11.0, -13.0]
    );

    // The shared buffer outlives its tensor, and the pool never hands it
    // to later work of the same size.
    drop(y);
    for k in 0..4 {
        let z = with_device(app.ours, || {
            Tensor::full(&[2, 3], k as f32).add_scalar(100.0)
        });
        z.realize().unwrap();
    }
    assert_eq!(
        app_reads(app, &shared),
        vec![5.0, 7.0, 9.0, 11.0, 13.0, 15.0]
    );

    // A broadcast view is handed over as a dense copy.
    let row = with_device(app.ours, || Tensor::from_slice(&[1.0, 2.0], &[1, 2])).unwrap();
    let wide = row.expand(&[3, 2]).unwrap();
    let dense = embed::share_buffer(&wide).unwrap();
    assert_eq!(app_reads(app, &dense), vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
}

#[test]
fn the_app_device_is_named_as_the_app_s() {
    let Some(app) = app() else { return };
    assert!(app.ours.to_string().starts_with("gpu:app"), "{}", app.ours);
    assert!(app.ours.describe().contains(&app.adapter.get_info().name));
}

#[track_caller]
fn assert_err<T: std::fmt::Debug>(r: shadergrad::Result<T>, words: &[&str]) -> Error {
    let e = r.expect_err("misuse must be an error");
    let msg = e.to_string();
    for w in words {
        assert!(msg.contains(w), "{msg:?} should mention {w:?}");
    }
    e
}

#[test]
fn each_misuse_is_an_error_that_names_it() {
    let Some(app) = app() else { return };
    let buffer = |size, usage| {
        app.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    // A buffer without storage usage.
    let vertex = buffer(64, wgpu::BufferUsages::VERTEX);
    assert_err(
        embed::wrap_buffer(app.ours, &vertex, &[4], DType::F32, 0),
        &["STORAGE"],
    );
    // A buffer too small for the shape, or with a misaligned offset.
    let small = buffer(64, storage);
    assert_err(
        embed::wrap_buffer(app.ours, &small, &[4, 5], DType::F32, 0),
        &["[4, 5]", "80 bytes", "64"],
    );
    assert_err(
        embed::wrap_buffer(app.ours, &small, &[4], DType::F32, 2),
        &["multiples of 4"],
    );
    // The cpu backend has no buffers.
    assert_err(
        embed::wrap_buffer(Device::Cpu, &small, &[4], DType::F32, 0),
        &["from_wgpu"],
    );
    // A buffer of another wgpu device.
    let (other, _q) = pollster::block_on(app.adapter.request_device(&Default::default())).unwrap();
    let foreign = other.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: storage,
        mapped_at_creation: false,
    });
    assert_err(
        embed::wrap_buffer(app.ours, &foreign, &[4], DType::F32, 0),
        &["another wgpu device"],
    );

    let img = with_device(app.ours, || Tensor::rand(&[3, 8, 8]));
    let rgba8 = texture(app, wgpu::TextureFormat::Rgba8Unorm, 8, 8, WRITE_USAGE);
    // Unsupported formats.
    let r32 = texture(app, wgpu::TextureFormat::R32Float, 8, 8, WRITE_USAGE);
    assert_err(
        embed::write_texture(app.ours, &img, &r32, &TextureWrite::default()),
        &["R32Float", "Rgba8Unorm"],
    );
    assert_err(
        embed::read_texture(app.ours, &r32, &TextureRead::default()),
        &["R32Float", "Rgba32Float"],
    );
    // A texture too small, or without the usage.
    let tiny = texture(app, wgpu::TextureFormat::Rgba8Unorm, 4, 8, WRITE_USAGE);
    assert_err(
        embed::write_texture(app.ours, &img, &tiny, &TextureWrite::default()),
        &["8x8", "4x8 texture"],
    );
    let sampled_only = texture(
        app,
        wgpu::TextureFormat::Rgba8Unorm,
        8,
        8,
        wgpu::TextureUsages::TEXTURE_BINDING,
    );
    assert_err(
        embed::write_texture(app.ours, &img, &sampled_only, &TextureWrite::default()),
        &["STORAGE_BINDING"],
    );
    // Not an image, or an ambiguous one.
    let flat = with_device(app.ours, || Tensor::rand(&[8, 8]));
    assert_err(
        embed::write_texture(app.ours, &flat, &rgba8, &TextureWrite::default()),
        &["[8, 8]"],
    );
    let cube = with_device(app.ours, || Tensor::rand(&[3, 8, 4]));
    assert_err(
        embed::write_texture(app.ours, &cube, &rgba8, &TextureWrite::default()),
        &["order"],
    );
    // A tensor of another device.
    let on_cpu = with_device(Device::Cpu, || Tensor::rand(&[3, 8, 8]));
    assert_err(
        embed::write_texture(app.ours, &on_cpu, &rgba8, &TextureWrite::default()),
        &["lives on cpu", ".to("],
    );
    assert_err(embed::share_buffer(&on_cpu), &["cpu"]);
    // A texture of another wgpu device.
    let foreign_tex = other.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: wgpu::Extent3d {
            width: 8,
            height: 8,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: WRITE_USAGE,
        view_formats: &[],
    });
    assert_err(
        embed::write_texture(app.ours, &img, &foreign_tex, &TextureWrite::default()),
        &["texture"],
    );
    // After all that, the device still works.
    embed::write_texture(app.ours, &img, &rgba8, &TextureWrite::default()).unwrap();
    assert_eq!(img.sum_all().to_vec().unwrap().len(), 1);
}

#[test]
fn a_device_below_the_required_limits_is_refused_with_what_is_missing() {
    let Some(app) = app() else { return };
    let (device, queue) = pollster::block_on(app.adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: wgpu::Limits::downlevel_defaults(),
        ..Default::default()
    }))
    .unwrap();
    let err = assert_err(
        Device::from_wgpu(device, queue, app.adapter.get_info()),
        &[
            "max_storage_buffers_per_shader_stage: the device has 4, shadergrad needs 8",
            "required_limits",
        ],
    );
    assert!(matches!(err, Error::Device(_)));
}
