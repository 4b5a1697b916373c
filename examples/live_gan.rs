//! A window that shows a DCGAN learning CIFAR-10 while it trains, on the
//! window's own wgpu device: each frame runs a training step, and every few
//! steps the generator's 8x8 sample grid (fixed latents) is written into a
//! texture with one kernel and drawn by egui, beside a panel of numbers.
//! No image goes through the host.
//!
//!     cargo run --release --features window --example live_gan
//!     cargo run --release --features window --example live_gan -- \
//!         --data ../shared/data --limit 5000 --steps 300 --screenshot live.png
//!     shadergrad train gan --out runs/gan      # then go on from it, live:
//!     cargo run --release --features window --example live_gan -- \
//!         --checkpoint runs/gan/checkpoint.safetensors
//!
//! Flags: `--data PATH` (CIFAR-10 archive or folder; else $SHADERGRAD_DATA,
//! ./data, ../shared/data), `--limit N` (train on N images), `--width W`
//! (the nets' width, 32), `--checkpoint FILE` (start from a `shadergrad
//! train gan` checkpoint: its nets and optimizer state), `--batch B` (64), `--sample-every K` (steps
//! between grid updates, 10), `--steps N` (stop training after N more),
//! `--screenshot FILE` (after N steps, save the window's picture as a PNG
//! and exit).

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use shadergrad::data::batches::BatchOptions;
use shadergrad::data::{cifar10, Augment, Batcher, ImageDataset};
use shadergrad::embed::{self, TextureWrite, ValueRange};
use shadergrad::models::gan::Gan;
use shadergrad::nn::Module;
use shadergrad::train::gan::{fixed_latents, gan_step, load_gan, GanStep};
use shadergrad::{with_device, Adam, Device, Optimizer, Tensor};
use winit::application::ApplicationHandler;
use winit::event::WindowEvent;
use winit::event_loop::{ActiveEventLoop, EventLoop};
use winit::window::{Window, WindowId};

const GRID: usize = 8;
const PADDING: u32 = 2;
/// The grid is drawn this many times its texel size.
const ZOOM: f32 = 2.0;

struct Args {
    data: Option<PathBuf>,
    limit: Option<usize>,
    width: usize,
    batch: usize,
    sample_every: usize,
    steps: Option<usize>,
    screenshot: Option<PathBuf>,
    checkpoint: Option<PathBuf>,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args {
        data: None,
        limit: None,
        width: 32,
        batch: 64,
        sample_every: 10,
        steps: None,
        screenshot: None,
        checkpoint: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = Some(value()?.into()),
            "--limit" => a.limit = Some(value()?.parse()?),
            "--width" => a.width = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--sample-every" => a.sample_every = value()?.parse::<usize>()?.max(1),
            "--steps" => a.steps = Some(value()?.parse()?),
            "--screenshot" => a.screenshot = Some(value()?.into()),
            "--checkpoint" => a.checkpoint = Some(value()?.into()),
            other => {
                return Err(
                    format!("unknown flag {other}; see the top of examples/live_gan.rs").into(),
                )
            }
        }
    }
    if a.screenshot.is_some() && a.steps.is_none() {
        return Err("--screenshot needs --steps N (the step to take it at)".into());
    }
    Ok(a)
}

/// The GAN, its optimizers and data, stepped by the frame loop.
struct Trainer {
    gan: Gan,
    opt_d: Adam,
    opt_g: Adam,
    data: Arc<ImageDataset>,
    batches: Option<Batcher>,
    epoch: u64,
    batch: usize,
    grid_z: Tensor,
    step: usize,
    /// The step the run started from (a checkpoint's).
    first: usize,
    last: GanStep,
    started: Instant,
    steps_per_sec: f32,
}

impl Trainer {
    fn new(args: &Args, data: ImageDataset) -> shadergrad::Result<Trainer> {
        shadergrad::manual_seed(0);
        let adam = |m: &dyn Module| {
            Adam::new(m.parameters().into_iter().map(|(_, p)| p).collect(), 2e-4).betas(0.5, 0.999)
        };
        let (gan, opt_d, opt_g, first) = match &args.checkpoint {
            None => {
                let gan = Gan::dcgan(args.width)?;
                let (d, g) = (adam(&gan.discriminator), adam(&gan.generator));
                (gan, d, g, 0)
            }
            Some(path) => {
                let (gan, ck) = load_gan(path)?;
                let (mut d, mut g) = (adam(&gan.discriminator), adam(&gan.generator));
                for (opt, prefix) in [(&mut d, "discriminator"), (&mut g, "generator")] {
                    opt.load_state_tensors(&|n| {
                        ck.tensor(&format!("{prefix}.{n}")).and_then(|t| t.ok())
                    })?;
                }
                let step = ck.metadata.get("step").and_then(|s| s.parse().ok());
                (gan, d, g, step.unwrap_or(0))
            }
        };
        Ok(Trainer {
            opt_d,
            opt_g,
            grid_z: fixed_latents(&gan, GRID * GRID, 0),
            gan,
            data: Arc::new(data),
            batches: None,
            epoch: 0,
            batch: args.batch,
            step: first,
            first,
            last: GanStep::default(),
            started: Instant::now(),
            steps_per_sec: 0.0,
        })
    }

    /// The next full real batch, in [-1, 1].
    fn real_batch(&mut self) -> shadergrad::Result<Tensor> {
        loop {
            if let Some(b) = self.batches.as_mut().and_then(Iterator::next) {
                if b.labels.len() == self.batch {
                    return Ok(b.tensors()?.0);
                }
            }
            let opts = BatchOptions {
                batch_size: self.batch,
                shuffle: true,
                seed: 0,
                augment: Augment::default(),
                normalize: Some((vec![0.5; 3], vec![0.5; 3])),
            };
            self.batches = Some(Batcher::new(self.data.clone(), opts, self.epoch, 0));
            self.epoch += 1;
        }
    }

    fn step(&mut self) -> shadergrad::Result<()> {
        let x = self.real_batch()?;
        let figures = gan_step(&self.gan, &mut self.opt_d, &mut self.opt_g, &x)?;
        self.step += 1;
        self.last = GanStep {
            step: self.step,
            ..figures
        };
        self.steps_per_sec =
            (self.step - self.first) as f32 / self.started.elapsed().as_secs_f32().max(1e-6);
        Ok(())
    }

    /// The sample grid into `texture`, on the device, in evaluation mode.
    fn draw_samples(&mut self, gpu: Device, texture: &wgpu::Texture) -> shadergrad::Result<()> {
        self.gan.generator.set_training(false);
        let images = shadergrad::no_grad(|| self.gan.generate(&self.grid_z));
        self.gan.generator.set_training(true);
        let opts = TextureWrite {
            range: ValueRange::Signed,
            columns: Some(GRID),
            padding: PADDING,
            ..Default::default()
        };
        embed::write_texture(gpu, &images?, texture, &opts)?;
        Ok(())
    }
}

/// What exists once the window does.
struct Live {
    window: Arc<Window>,
    surface: wgpu::Surface<'static>,
    config: wgpu::SurfaceConfiguration,
    device: wgpu::Device,
    queue: wgpu::Queue,
    gpu: Device,
    egui: egui_winit::State,
    renderer: egui_wgpu::Renderer,
    samples: wgpu::Texture,
    samples_id: egui::TextureId,
    sample_every: usize,
    trainer: Trainer,
}

struct App {
    args: Args,
    data: Option<ImageDataset>,
    live: Option<Live>,
    error: Option<Box<dyn Error>>,
}

impl App {
    fn start(&mut self, event_loop: &ActiveEventLoop) -> Result<Live, Box<dyn Error>> {
        let window = Arc::new(
            event_loop.create_window(
                Window::default_attributes()
                    .with_title("shadergrad: a GAN training live")
                    .with_inner_size(winit::dpi::LogicalSize::new(900.0, 600.0)),
            )?,
        );
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_with_display_handle_from_env(
                Box::new(event_loop.owned_display_handle()),
            ));
        let surface = instance.create_surface(window.clone())?;
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            compatible_surface: Some(&surface),
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))?;
        let (device, queue) =
            pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
                label: Some("live_gan"),
                required_limits: adapter.limits(),
                ..Default::default()
            }))?;
        // The window's device is the one shadergrad trains on.
        let gpu = Device::from_wgpu(device.clone(), queue.clone(), adapter.get_info())?;
        println!("training on {}", gpu.describe());

        let size = window.inner_size();
        let caps = surface.get_capabilities(&adapter);
        let format = caps
            .formats
            .iter()
            .copied()
            .find(|f| !f.is_srgb())
            .unwrap_or(caps.formats[0]);
        let mut config = surface
            .get_default_config(&adapter, size.width.max(1), size.height.max(1))
            .ok_or("the adapter cannot present to this window")?;
        config.format = format;
        config.view_formats = vec![];
        config.present_mode = wgpu::PresentMode::AutoVsync;
        surface.configure(&device, &config);

        let egui_ctx = egui::Context::default();
        let egui = egui_winit::State::new(
            egui_ctx,
            egui::ViewportId::ROOT,
            &window,
            Some(window.scale_factor() as f32),
            None,
            None,
        );
        let mut renderer = egui_wgpu::Renderer::new(&device, format, Default::default());

        let (w, h) = embed::grid_size(GRID * GRID, 32, 32, Some(GRID), PADDING);
        let samples = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("samples"),
            size: wgpu::Extent3d {
                width: w as u32,
                height: h as u32,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8Unorm,
            usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::TEXTURE_BINDING,
            view_formats: &[],
        });
        let samples_id = renderer.register_native_texture(
            &device,
            &samples.create_view(&Default::default()),
            wgpu::FilterMode::Nearest,
        );
        let data = self.data.take().ok_or("started twice")?;
        let mut trainer = with_device(gpu, || Trainer::new(&self.args, data))?;
        with_device(gpu, || trainer.draw_samples(gpu, &samples))?;
        Ok(Live {
            window,
            surface,
            config,
            device,
            queue,
            gpu,
            egui,
            renderer,
            samples,
            samples_id,
            sample_every: self.args.sample_every,
            trainer,
        })
    }
}

impl Live {
    /// Train a step (until `--steps`), update the grid now and then, draw.
    fn frame(&mut self, args: &Args) -> Result<bool, Box<dyn Error>> {
        let run = self.trainer.step - self.trainer.first;
        let training = args.steps.is_none_or(|n| run < n);
        if training {
            let gpu = self.gpu;
            with_device(gpu, || -> shadergrad::Result<()> {
                self.trainer.step()?;
                if self.trainer.step.is_multiple_of(args.sample_every) {
                    self.trainer.draw_samples(gpu, &self.samples)?;
                }
                Ok(())
            })?;
        }
        let done = args
            .steps
            .is_some_and(|n| self.trainer.step - self.trainer.first >= n);
        if done && training {
            // The final grid, whatever the sampling interval.
            with_device(self.gpu, || {
                self.trainer.draw_samples(self.gpu, &self.samples)
            })?;
        }
        let frame = match self.surface.get_current_texture() {
            wgpu::CurrentSurfaceTexture::Success(f)
            | wgpu::CurrentSurfaceTexture::Suboptimal(f) => f,
            _ => {
                // Lost or outdated (a resize): configure again and draw next time.
                self.surface.configure(&self.device, &self.config);
                return Ok(false);
            }
        };
        let view = frame.texture.create_view(&Default::default());
        self.draw(&view, !done)?;
        self.window.pre_present_notify();
        self.queue.present(frame);
        if done {
            if let Some(path) = &args.screenshot {
                self.screenshot(path, false)?;
                println!("wrote {} at step {}", path.display(), self.trainer.step);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The panel and the grid, drawn into `target`.
    fn draw(&mut self, target: &wgpu::TextureView, training: bool) -> Result<(), Box<dyn Error>> {
        let input = self.egui.take_egui_input(&self.window);
        let t = &self.trainer;
        let s = t.last;
        let (gw, gh) = embed::grid_size(GRID * GRID, 32, 32, Some(GRID), PADDING);
        let device_name = self.gpu.describe();
        let samples_id = self.samples_id;
        let sample_every = self.sample_every;
        let output = self.egui.egui_ctx().run_ui(input, |ui| {
            egui::Panel::left("numbers")
                .exact_size(250.0)
                .show(ui, |ui| {
                    ui.heading("DCGAN on CIFAR-10");
                    ui.label(if training { "training" } else { "stopped" });
                    egui::Grid::new("figures").num_columns(2).show(ui, |ui| {
                        let mut row = |name: &str, value: String| {
                            ui.label(name);
                            ui.monospace(value);
                            ui.end_row();
                        };
                        row("step", s.step.to_string());
                        row("from step", t.first.to_string());
                        row("D loss", format!("{:.4}", s.d_loss));
                        row("G loss", format!("{:.4}", s.g_loss));
                        row("D(x)", format!("{:.3}", s.d_real));
                        row("D(G(z))", format!("{:.3}", s.d_fake));
                        row("steps/s", format!("{:.2}", t.steps_per_sec));
                        row("batch", t.batch.to_string());
                        row("images", t.data.len().to_string());
                    });
                    ui.separator();
                    ui.small(device_name.clone());
                });
            egui::CentralPanel::default().show(ui, |ui| {
                ui.label(format!(
                    "samples of 64 fixed latents, redrawn every {sample_every} steps"
                ));
                ui.image(egui::load::SizedTexture::new(
                    samples_id,
                    [gw as f32 * ZOOM, gh as f32 * ZOOM],
                ));
            });
        });
        self.egui
            .handle_platform_output(&self.window, output.platform_output.clone());
        let ppp = output.pixels_per_point;
        let jobs = self.egui.egui_ctx().tessellate(output.shapes, ppp);
        for (id, deltas) in &output.textures_delta.set {
            for delta in deltas {
                self.renderer
                    .update_texture(&self.device, &self.queue, *id, delta);
            }
        }
        let screen = egui_wgpu::ScreenDescriptor {
            size_in_pixels: [self.config.width, self.config.height],
            pixels_per_point: ppp,
        };
        let mut encoder = self.device.create_command_encoder(&Default::default());
        let extra =
            self.renderer
                .update_buffers(&self.device, &self.queue, &mut encoder, &jobs, &screen);
        {
            let pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("egui"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: target,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                ..Default::default()
            });
            self.renderer
                .render(&mut pass.forget_lifetime(), &jobs, &screen);
        }
        self.queue
            .submit(extra.into_iter().chain([encoder.finish()]));
        for id in &output.textures_delta.free {
            self.renderer.free_texture(id);
        }
        Ok(())
    }

    /// Draw the window's picture once more into a texture we can copy, and
    /// save it (surface textures need not allow copies).
    fn screenshot(&mut self, path: &std::path::Path, training: bool) -> Result<(), Box<dyn Error>> {
        let (w, h) = (self.config.width, self.config.height);
        let texture = self.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("screenshot"),
            size: wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: self.config.format,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        self.draw(&texture.create_view(&Default::default()), training)?;
        let row = (w * 4).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("screenshot"),
            size: (row * h) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
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
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: None,
        })?;
        rx.recv()??;
        let bgra = matches!(
            self.config.format,
            wgpu::TextureFormat::Bgra8Unorm | wgpu::TextureFormat::Bgra8UnormSrgb
        );
        let mut pixels: Vec<u8> = staging
            .get_mapped_range(..)?
            .chunks(row as usize)
            .flat_map(|r| r[..(w * 4) as usize].to_vec())
            .collect();
        if bgra {
            pixels.chunks_mut(4).for_each(|p| p.swap(0, 2));
        }
        pixels.chunks_mut(4).for_each(|p| p[3] = 255);
        image::RgbaImage::from_raw(w, h, pixels)
            .ok_or("pixel count")?
            .save(path)?;
        Ok(())
    }
}

impl ApplicationHandler for App {
    fn resumed(&mut self, event_loop: &ActiveEventLoop) {
        if self.live.is_some() {
            return;
        }
        match self.start(event_loop) {
            Ok(live) => {
                live.window.request_redraw();
                self.live = Some(live);
            }
            Err(e) => {
                self.error = Some(e);
                event_loop.exit();
            }
        }
    }

    fn window_event(&mut self, event_loop: &ActiveEventLoop, _id: WindowId, event: WindowEvent) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let _ = live.egui.on_window_event(&live.window, &event);
        match event {
            WindowEvent::CloseRequested => event_loop.exit(),
            WindowEvent::Resized(size) => {
                live.config.width = size.width.max(1);
                live.config.height = size.height.max(1);
                live.surface.configure(&live.device, &live.config);
            }
            WindowEvent::RedrawRequested => match live.frame(&self.args) {
                Ok(true) => event_loop.exit(),
                Ok(false) => live.window.request_redraw(),
                Err(e) => {
                    self.error = Some(e);
                    event_loop.exit();
                }
            },
            _ => {}
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let path = cifar10::find(args.data.as_deref())?;
    println!("data: {} (decoding...)", path.display());
    let mut train = cifar10::load(&path)?.train;
    if let Some(n) = args.limit {
        train = train.sample(n, 0);
    }
    println!("{} training images", train.len());
    let event_loop = EventLoop::new()?;
    let mut app = App {
        args,
        data: Some(train),
        live: None,
        error: None,
    };
    event_loop.run_app(&mut app)?;
    match app.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
