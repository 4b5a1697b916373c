//! The wgpu backend: every primitive as a hand-written WGSL kernel (files in
//! `shaders/`), elementwise chains compiled by one emitter (`emit`).
//!
//! A `realize` records all its dispatches into one command encoder and
//! submits once (`Recorder`). Memory comes from a per-device pool of
//! size-classed buffers; a buffer a recorder has bound stays with that
//! recorder until it is submitted, and is reused inside the same encoder as
//! soon as the scheduler drops its last use (commands run in order), so
//! reuse follows liveness without racing other threads' encoders.

pub mod emit;
pub mod exec;
pub mod shaders;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::backend::{Storage, Value};
use crate::{DType, Error, Result};

pub use exec::exec;

/// Most u32 words of parameters a kernel takes (one uniform block).
pub(crate) const META_WORDS: usize = 128;
/// Storage buffers a kernel may bind: WebGPU's default per-stage limit.
pub const MAX_STORAGE_BUFFERS: usize = 8;
/// Parameter blocks per uniform buffer of a recording.
const UNIFORM_SLOTS: u64 = 128;
/// Workgroups per dispatch dimension (WebGPU's default limit).
pub(crate) const MAX_GROUPS: u32 = 65_535;

/// One opened device (an adapter's, or one the embedding application gave us).
pub struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// Pipelines by kernel and specialisation (source name or generated text,
    /// entry point, override constants).
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    modules: Mutex<HashMap<String, wgpu::ShaderModule>>,
    /// Free buffers by size class (bytes).
    pool: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    /// Convolution offset tables by mode and geometry (see gemm.wgsl).
    pub(crate) conv_tables: Mutex<HashMap<Vec<u32>, Value>>,
    /// One-element buffers of constants by (bits, type): `full` nodes are
    /// in every step's graph and would otherwise upload each time.
    constants: Mutex<HashMap<(u32, DType), Value>>,
    /// Set by the device-lost callback.
    lost: Arc<Mutex<Option<String>>>,
    /// Errors wgpu reported outside any error scope (it would panic otherwise).
    uncaptured: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", describe_info(&self.info))
    }
}

/// "llvmpipe (LLVM 15.0.6, 256 bits) · Vulkan · Cpu"
pub fn describe_info(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} · {:?} · {:?}",
        info.name, info.backend, info.device_type
    )
}

/// The features we use when the adapter has them.
fn wanted_features() -> wgpu::Features {
    wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY
}

/// wgpu's GL backend makes its EGL context current per call, and two
/// threads doing so at once fail (EGL_BAD_ACCESS). On GL, each thread's
/// GPU work (a whole realize, a download, adapter listing) runs alone.
/// Reentrant: a realize downloads inside its own turn.
struct GlTurn {
    state: Mutex<(Option<std::thread::ThreadId>, usize)>,
    free: std::sync::Condvar,
}

static GL_TURN: GlTurn = GlTurn {
    state: Mutex::new((None, 0)),
    free: std::sync::Condvar::new(),
};

pub(crate) struct GlTurnGuard;

fn gl_turn(backend: wgpu::Backend) -> Option<GlTurnGuard> {
    if backend != wgpu::Backend::Gl {
        return None;
    }
    let me = std::thread::current().id();
    let mut st = lock(&GL_TURN.state);
    while st.0.is_some_and(|owner| owner != me) {
        st = GL_TURN.free.wait(st).unwrap_or_else(|e| e.into_inner());
    }
    st.0 = Some(me);
    st.1 += 1;
    Some(GlTurnGuard)
}

impl Drop for GlTurnGuard {
    fn drop(&mut self) {
        let mut st = lock(&GL_TURN.state);
        st.1 -= 1;
        if st.1 == 0 {
            st.0 = None;
            GL_TURN.free.notify_all();
        }
    }
}

/// Whether `WGPU_BACKEND` allows GL (adapter listing then takes the GL turn).
fn gl_possible() -> wgpu::Backend {
    match wgpu::Backends::from_env() {
        Some(b) if !b.contains(wgpu::Backends::GL) => wgpu::Backend::Vulkan,
        _ => wgpu::Backend::Gl,
    }
}

static REGISTRY: Mutex<Vec<Arc<Context>>> = Mutex::new(Vec::new());
/// Registry index of each adapter ordinal that has been opened.
static OPENED: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The context behind `Device::Gpu(id)`.
pub fn context(id: usize) -> Result<Arc<Context>> {
    lock(&REGISTRY).get(id).cloned().ok_or_else(|| {
        Error::param(
            "device",
            format!("gpu device #{id} was never opened; get devices from Device::gpu or Device::from_wgpu"),
        )
    })
}

fn instance() -> &'static wgpu::Instance {
    static INSTANCE: OnceLock<wgpu::Instance> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
    })
}

/// `f` over every adapter wgpu finds (honouring `WGPU_BACKEND`), best
/// first: discrete, integrated, virtual, other, software; GL after native
/// APIs. The list lives only inside `f`: on GL, creating and dropping
/// adapters touches EGL, so both happen within one GL turn.
pub fn with_adapters<R>(f: impl FnOnce(&[wgpu::Adapter]) -> R) -> R {
    let _turn = gl_turn(gl_possible());
    let list = adapters_unguarded();
    f(&list)
}

fn adapters_unguarded() -> Vec<wgpu::Adapter> {
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    let mut list = pollster::block_on(instance().enumerate_adapters(backends));
    let rank = |a: &wgpu::Adapter| {
        let info = a.get_info();
        let kind = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        };
        (kind, (info.backend == wgpu::Backend::Gl) as u8)
    };
    list.sort_by_key(rank);
    list
}

/// Open adapter `ordinal` of `adapters()` (once; later calls share it) and
/// return its registry id.
pub fn open(ordinal: usize) -> Result<usize> {
    let mut opened = lock(&OPENED);
    if let Some(&(_, id)) = opened.iter().find(|(o, _)| *o == ordinal) {
        return Ok(id);
    }
    let id = with_adapters(|list| open_adapter(list, ordinal))?;
    opened.push((ordinal, id));
    Ok(id)
}

fn open_adapter(list: &[wgpu::Adapter], ordinal: usize) -> Result<usize> {
    let Some(adapter) = list.get(ordinal) else {
        return Err(no_adapter(&format!("gpu:{ordinal}"), list.len()));
    };
    let info = adapter.get_info();
    let features = adapter.features() & wanted_features();
    let desc = wgpu::DeviceDescriptor {
        label: Some("shadergrad"),
        required_features: features,
        // The adapter's own limits: bigger buffers and bindings than the defaults.
        required_limits: adapter.limits(),
        ..Default::default()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
        Error::Device(format!(
            "could not open {}: {e}; try another adapter (`shadergrad devices`) or --device cpu",
            describe_info(&info)
        ))
    })?;
    Ok(register(device, queue, info))
}

/// The error for "no usable adapter", saying what was tried.
pub(crate) fn no_adapter(asked: &str, found: usize) -> Error {
    let backends = std::env::var("WGPU_BACKEND").unwrap_or_else(|_| "all".into());
    Error::Device(format!(
        "no GPU adapter for {asked}: wgpu found {found} adapter(s) on backends {backends}. \
         Install a Vulkan driver (on Debian/Ubuntu `apt-get install mesa-vulkan-drivers` gives a \
         software one), check WGPU_BACKEND, or use --device cpu"
    ))
}

/// Adopt a device: ours from `open`, or an embedding application's.
pub fn register(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> usize {
    let lost = Arc::new(Mutex::new(None));
    let uncaptured = Arc::new(Mutex::new(Vec::new()));
    {
        let lost = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            *lock(&lost) = Some(format!("{reason:?}: {msg}"));
        });
        let uncaptured = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            lock(&uncaptured).push(e.to_string());
        }));
    }
    let ctx = Context {
        limits: device.limits(),
        features: device.features(),
        device,
        queue,
        info,
        pipelines: Mutex::new(HashMap::new()),
        modules: Mutex::new(HashMap::new()),
        pool: Mutex::new(HashMap::new()),
        conv_tables: Mutex::new(HashMap::new()),
        constants: Mutex::new(HashMap::new()),
        lost,
        uncaptured,
    };
    let mut reg = lock(&REGISTRY);
    reg.push(Arc::new(ctx));
    reg.len() - 1
}

/// Size class of an allocation: at most 1/8 larger than asked, so pooled
/// buffers fit many nearby sizes without wasting much.
fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(16);
    let top = 64 - (bytes - 1).leading_zeros();
    let step = (1u64 << top.saturating_sub(3)).max(16);
    bytes.div_ceil(step) * step
}

/// A device buffer holding `len` elements of `dtype`. Returns to its
/// device's pool when dropped.
pub struct GpuBuffer {
    pub(crate) ctx: Arc<Context>,
    buffer: Option<wgpu::Buffer>,
    pub(crate) len: usize,
    pub(crate) dtype: DType,
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer({} x {})", self.len, self.dtype)
    }
}

impl GpuBuffer {
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("present until drop")
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            lock(&self.ctx.pool).entry(b.size()).or_default().push(b);
        }
    }
}

const BUFFER_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Context {
    /// Fail early once the device is gone, instead of queueing into the void.
    pub(crate) fn check_alive(&self) -> Result<()> {
        if let Some(why) = lock(&self.lost).as_ref() {
            return Err(Error::Device(format!(
                "the GPU device ({}) was lost ({why}); its tensors are gone. Save work from \
                 checkpoints and restart, or use --device cpu",
                self.info.name
            )));
        }
        let mut errs = lock(&self.uncaptured);
        if !errs.is_empty() {
            let msg = errs.join("; ");
            errs.clear();
            return Err(Error::Device(format!("wgpu reported: {msg}")));
        }
        Ok(())
    }

    /// Is this the largest buffer a kernel may bind?
    fn check_binding(&self, op: &'static str, bytes: u64) -> Result<()> {
        let limit = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        if bytes > limit {
            return Err(Error::OutOfMemory(format!(
                "{op}: a {bytes}-byte tensor exceeds this device's largest storage binding ({limit} bytes, {}); use a smaller batch or split the tensor",
                self.info.name
            )));
        }
        Ok(())
    }

    /// A buffer of at least `bytes`, from the pool when one is free.
    fn alloc_raw(&self, op: &'static str, bytes: u64) -> Result<wgpu::Buffer> {
        let class = size_class(bytes);
        self.check_binding(op, class)?;
        if let Some(b) = lock(&self.pool).get_mut(&class).and_then(|v| v.pop()) {
            return Ok(b);
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let b = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(op),
            size: class,
            usage: BUFFER_USAGE,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            // Free what the pool holds and try once more before giving up.
            lock(&self.pool).clear();
            return Err(Error::OutOfMemory(format!(
                "{op}: allocating {bytes} bytes on {} failed ({e}); the pool was released, so \
                 smaller work (a smaller batch) can continue",
                self.info.name
            )));
        }
        Ok(b)
    }

    pub(crate) fn alloc(
        self: &Arc<Self>,
        op: &'static str,
        len: usize,
        dtype: DType,
    ) -> Result<GpuBuffer> {
        let buffer = self.alloc_raw(op, 4 * len as u64)?;
        Ok(GpuBuffer {
            ctx: self.clone(),
            buffer: Some(buffer),
            len,
            dtype,
        })
    }

    /// Copy host data into a new device buffer (mapped at creation, so it
    /// is ordered before any command that reads it).
    pub(crate) fn upload(self: &Arc<Self>, storage: &Storage) -> Result<GpuBuffer> {
        let (bytes, dtype): (&[u8], DType) = match storage {
            Storage::F32(v) => (bytemuck::cast_slice(v), DType::F32),
            Storage::I32(v) => (bytemuck::cast_slice(v), DType::I32),
            Storage::Gpu(_) => {
                return Err(Error::param(
                    "upload",
                    "internal: the value is already on a device",
                ))
            }
        };
        let class = size_class(bytes.len() as u64);
        self.check_binding("upload", class)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("upload"),
            size: class,
            usage: BUFFER_USAGE,
            mapped_at_creation: true,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            lock(&self.pool).clear();
            return Err(Error::OutOfMemory(format!(
                "upload: {} bytes to {} failed ({e})",
                bytes.len(),
                self.info.name
            )));
        }
        // An empty tensor still gets a (minimum-size) buffer to bind.
        if !bytes.is_empty() {
            let mut view = buffer
                .get_mapped_range_mut(..bytes.len() as u64)
                .map_err(|e| Error::Device(format!("upload: mapping failed: {e}")))?;
            view.slice(..).copy_from_slice(bytes);
        }
        buffer.unmap();
        Ok(GpuBuffer {
            ctx: self.clone(),
            buffer: Some(buffer),
            len: storage.len(),
            dtype,
        })
    }

    /// Read a buffer back (waits for all submitted work).
    pub(crate) fn download(&self, b: &GpuBuffer) -> Result<Storage> {
        let _turn = gl_turn(self.info.backend);
        self.check_alive()?;
        let bytes = 4 * b.len as u64;
        if bytes == 0 {
            return Ok(match b.dtype {
                DType::F32 => Storage::F32(vec![]),
                DType::I32 => Storage::I32(vec![]),
            });
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("download"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(b.raw(), 0, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| Error::Device("download: the map callback never ran".into()))?
            .map_err(|e| Error::Device(format!("download: mapping failed: {e}")))?;
        let data = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| Error::Device(format!("download: {e}")))?;
            match b.dtype {
                DType::F32 => Storage::F32(bytemuck::cast_slice(&view).to_vec()),
                DType::I32 => Storage::I32(bytemuck::cast_slice(&view).to_vec()),
            }
        };
        staging.unmap();
        Ok(data)
    }

    /// Block until the queue is idle.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .map_err(|e| Error::Device(format!("waiting for the GPU failed: {e}")))?;
        self.check_alive()
    }

    /// The pipeline for `entry` of a shader, specialised by `constants`.
    /// `name` is a file in `shaders/` or, for generated code, a label;
    /// `source` is its text.
    pub(crate) fn pipeline(
        &self,
        name: &str,
        source: &str,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let mut key = format!("{name}:{entry}");
        for (k, v) in constants {
            key += &format!(":{k}={v}");
        }
        // Generated kernels share a name; their text tells them apart.
        if name.starts_with("fused") {
            key += source;
        }
        if let Some(p) = lock(&self.pipelines).get(&key) {
            return Ok(p.clone());
        }
        // Debug builds (the tests) also run naga's validator on every
        // generated kernel themselves, so an emitter bug names the source.
        #[cfg(debug_assertions)]
        if name.starts_with("fused") {
            validate_wgsl(name, source)?;
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module_key = if name.starts_with("fused") {
            source.to_string()
        } else {
            name.to_string()
        };
        let module = {
            let mut modules = lock(&self.modules);
            modules
                .entry(module_key)
                .or_insert_with(|| {
                    self.device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(name),
                            source: wgpu::ShaderSource::Wgsl(source.into()),
                        })
                })
                .clone()
        };
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            lock(&self.modules).remove(if name.starts_with("fused") {
                source
            } else {
                name
            });
            return Err(Error::Device(format!(
                "kernel {name} (entry {entry}, constants {constants:?}) failed to compile on {}: {e}",
                self.info.name
            )));
        }
        let p = Arc::new(pipeline);
        lock(&self.pipelines).insert(key, p.clone());
        Ok(p)
    }
}

/// Parse and validate WGSL with naga, as wgpu does before compiling it.
pub fn validate_wgsl(name: &str, source: &str) -> Result<()> {
    use wgpu::naga;
    let module = naga::front::wgsl::parse_str(source).map_err(|e| {
        Error::Device(format!(
            "kernel {name} does not parse:\n{}",
            e.emit_to_string(source)
        ))
    })?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .map_err(|e| {
        Error::Device(format!(
            "kernel {name} does not validate:\n{}",
            e.emit_to_string(source)
        ))
    })?;
    Ok(())
}

/// One binding of a dispatch.
pub(crate) enum Bind<'a> {
    Read(&'a Value),
    /// An output from `Recorder::output`.
    Write(&'a Value),
    /// A binding this entry point does not use.
    Skip,
}

/// Records one realize's dispatches into a single command encoder.
pub struct Recorder {
    pub(crate) ctx: Arc<Context>,
    encoder: Option<wgpu::CommandEncoder>,
    /// Storage this encoder binds, held until submit (see the module doc);
    /// an entry nobody else holds is free for later dispatches of this encoder.
    held: Vec<Arc<Storage>>,
    dispatches: usize,
    /// Parameter buffers of this recording (see `uniform_slot`).
    uniforms: Vec<wgpu::Buffer>,
    uniform_used: u64,
    uniform_mapped: bool,
    error_scopes: Option<(wgpu::ErrorScopeGuard, wgpu::ErrorScopeGuard)>,
    /// A word kernels set when they meet an out-of-range index.
    pub(crate) index_flag: Option<Value>,
    /// Dropped last: the GL turn outlives everything recorded.
    _turn: Option<GlTurnGuard>,
}

thread_local! {
    static DISPATCHES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Kernel dispatches of the last GPU submit on this thread (tests count fusion with it).
pub fn last_dispatch_count() -> usize {
    DISPATCHES.with(|d| d.get())
}

impl Recorder {
    pub fn new(ctx: Arc<Context>) -> Result<Recorder> {
        let turn = gl_turn(ctx.info.backend);
        ctx.check_alive()?;
        let oom = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("realize"),
            });
        Ok(Recorder {
            ctx,
            encoder: Some(encoder),
            held: Vec::new(),
            dispatches: 0,
            uniforms: Vec::new(),
            uniform_used: 0,
            uniform_mapped: false,
            error_scopes: Some((oom, validation)),
            index_flag: None,
            _turn: turn,
        })
    }

    /// An output buffer: one this encoder no longer needs, else from the pool.
    pub(crate) fn output(&mut self, op: &'static str, len: usize, dtype: DType) -> Result<Value> {
        let class = size_class(4 * len as u64);
        if let Some(pos) = self.held.iter().position(|s| {
            Arc::strong_count(s) == 1
                && matches!(s.as_ref(), Storage::Gpu(b) if b.raw().size() == class)
        }) {
            let old = self.held.swap_remove(pos);
            if let Ok(Storage::Gpu(mut b)) = Arc::try_unwrap(old) {
                b.len = len;
                b.dtype = dtype;
                let storage = Arc::new(Storage::Gpu(b));
                self.held.push(storage.clone());
                return Ok(Value {
                    storage,
                    layout: crate::shape::Layout::contiguous(&[len]),
                });
            }
        }
        let b = self.ctx.alloc(op, len, dtype)?;
        let storage = Arc::new(Storage::Gpu(b));
        // Written by this encoder: it must not reach the shared pool before submit.
        self.held.push(storage.clone());
        Ok(Value {
            storage,
            layout: crate::shape::Layout::contiguous(&[len]),
        })
    }

    /// A constant of `shape` on the device: a cached element seen through
    /// stride 0.
    pub(crate) fn constant(&mut self, v: f32, dtype: DType, shape: &[usize]) -> Result<Value> {
        /// Distinct constants kept (a decaying learning rate makes new ones each step).
        const MAX_CONSTANTS: usize = 4096;
        let key = (v.to_bits(), dtype);
        let cached = lock(&self.ctx.constants).get(&key).cloned();
        let one = match cached {
            Some(c) => c,
            None => {
                let c = self.on_device(&Value::constant(v, dtype, &[1]))?;
                let mut table = lock(&self.ctx.constants);
                if table.len() >= MAX_CONSTANTS {
                    table.clear();
                }
                table.insert(key, c.clone());
                c
            }
        };
        let mut view = Value::constant(v, dtype, shape);
        view.storage = one.storage;
        Ok(view)
    }

    /// This value on the device: uploaded when it lives on the host.
    pub fn on_device(&mut self, v: &Value) -> Result<Value> {
        if let Storage::Gpu(b) = v.storage.as_ref() {
            if Arc::ptr_eq(&b.ctx, &self.ctx) {
                return Ok(v.clone());
            }
            // Another device's value goes through the host.
            let host = b.ctx.download(b)?;
            let up = self.ctx.upload(&host)?;
            return Ok(Value {
                storage: Arc::new(Storage::Gpu(up)),
                layout: v.layout.clone(),
            });
        }
        let up = self.ctx.upload(&v.storage)?;
        Ok(Value {
            storage: Arc::new(Storage::Gpu(up)),
            layout: v.layout.clone(),
        })
    }

    /// A slot for one dispatch's parameters: (index into `uniforms`, offset).
    /// Slots come from buffers mapped at creation and written in place, so
    /// a dispatch costs no buffer of its own; `unmap_uniforms` runs before
    /// the submit.
    fn uniform_slot(&mut self, words: &[u32; META_WORDS]) -> Result<(usize, u64)> {
        let slot =
            (4 * META_WORDS as u64).max(self.ctx.limits.min_uniform_buffer_offset_alignment as u64);
        let size = slot * UNIFORM_SLOTS;
        if self.uniforms.is_empty() || self.uniform_used + slot > size {
            self.unmap_uniforms();
            let buffer = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size,
                usage: wgpu::BufferUsages::UNIFORM,
                mapped_at_creation: true,
            });
            self.uniforms.push(buffer);
            self.uniform_used = 0;
            self.uniform_mapped = true;
        }
        let index = self.uniforms.len() - 1;
        let offset = self.uniform_used;
        {
            let mut view = self.uniforms[index]
                .get_mapped_range_mut(offset..offset + 4 * META_WORDS as u64)
                .map_err(|e| Error::Device(format!("dispatch: mapping parameters failed: {e}")))?;
            view.slice(..).copy_from_slice(bytemuck::cast_slice(words));
        }
        self.uniform_used += slot;
        Ok((index, offset))
    }

    fn unmap_uniforms(&mut self) {
        if self.uniform_mapped {
            if let Some(b) = self.uniforms.last() {
                b.unmap();
            }
            self.uniform_mapped = false;
        }
    }

    /// Record one dispatch of `pipeline` with a uniform block `meta` at
    /// binding 0 and `binds` at bindings 1.., over `groups` workgroups.
    pub(crate) fn dispatch(
        &mut self,
        pipeline: &wgpu::ComputePipeline,
        meta: &[u32],
        binds: &[Bind<'_>],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        let mut words = [0u32; META_WORDS];
        if meta.len() > META_WORDS {
            return Err(Error::param(
                "dispatch",
                format!(
                    "internal: {} parameter words exceed {META_WORDS}",
                    meta.len()
                ),
            ));
        }
        words[..meta.len()].copy_from_slice(meta);
        let (uniform, offset) = self.uniform_slot(&words)?;
        let layout = pipeline.get_bind_group_layout(0);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.uniforms[uniform],
                offset,
                size: std::num::NonZeroU64::new(4 * META_WORDS as u64),
            }),
        }];
        for (i, b) in binds.iter().enumerate() {
            let (Bind::Read(v) | Bind::Write(v)) = b else {
                continue;
            };
            let Storage::Gpu(buf) = v.storage.as_ref() else {
                return Err(Error::param("dispatch", "internal: a host value was bound"));
            };
            entries.push(wgpu::BindGroupEntry {
                binding: 1 + i as u32,
                resource: buf.raw().as_entire_binding(),
            });
        }
        let group = self
            .ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &layout,
                entries: &entries,
            });
        // Outputs are already held (`output`); inputs are held from here on.
        for b in binds {
            if let Bind::Read(v) = b {
                if !self.held.iter().any(|h| Arc::ptr_eq(h, &v.storage)) {
                    self.held.push(v.storage.clone());
                }
            }
        }
        let encoder = self.encoder.as_mut().expect("present until submit");
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        }
        self.dispatches += 1;
        Ok(())
    }

    /// Zero a buffer (recorded in order with the dispatches).
    pub(crate) fn clear(&mut self, v: &Value) {
        if let Storage::Gpu(b) = v.storage.as_ref() {
            let encoder = self.encoder.as_mut().expect("present until submit");
            encoder.clear_buffer(b.raw(), 0, None);
        }
    }

    /// Submit everything recorded; report errors the device raised meanwhile.
    pub fn submit(mut self) -> Result<()> {
        self.unmap_uniforms();
        let encoder = self.encoder.take().expect("present until submit");
        self.ctx.queue.submit([encoder.finish()]);
        DISPATCHES.with(|d| d.set(self.dispatches));
        let errors = self.error_scopes.take().map(|(oom, validation)| {
            let v = pollster::block_on(validation.pop());
            let o = pollster::block_on(oom.pop());
            (o, v)
        });
        if let Some((o, v)) = errors {
            if let Some(e) = o {
                lock(&self.ctx.pool).clear();
                return Err(Error::OutOfMemory(format!(
                    "{} ran out of memory ({e}); the buffer pool was released, so smaller work \
                     (a smaller batch) can continue",
                    self.ctx.info.name
                )));
            }
            if let Some(e) = v {
                return Err(Error::Device(format!("wgpu validation failed: {e}")));
            }
        }
        if let Some(flag) = self.index_flag.take() {
            let host = to_host(&flag)?;
            if let Storage::I32(v) = host.storage.as_ref() {
                if v[0] != 0 {
                    return Err(Error::param(
                        "gather/scatter_add",
                        format!(
                            "index {} is out of range for its axis; indices must lie in 0..size",
                            v[1]
                        ),
                    ));
                }
            }
        }
        self.ctx.check_alive()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // An abandoned recording (an error midway) still submits what it
        // has, so buffers return to the pool in a consistent order.
        if let Some(encoder) = self.encoder.take() {
            self.unmap_uniforms();
            self.ctx.queue.submit([encoder.finish()]);
        }
        // Scopes pop innermost first.
        if let Some((oom, validation)) = self.error_scopes.take() {
            drop(validation);
            drop(oom);
        }
    }
}

/// Workgroup grid for `n` invocations at `size` per group, folded into y
/// when x would exceed the dispatch limit. Kernels rebuild the flat index as
/// `gid.x + gid.y * nwg.x * size`.
pub(crate) fn grid(n: usize, size: u32) -> (u32, u32, u32) {
    let groups = (n as u64).div_ceil(size as u64).max(1);
    if groups <= MAX_GROUPS as u64 {
        (groups as u32, 1, 1)
    } else {
        let y = groups.div_ceil(MAX_GROUPS as u64);
        (MAX_GROUPS, y as u32, 1)
    }
}

/// A host copy of a value (identity for host values).
pub fn to_host(v: &Value) -> Result<Value> {
    match v.storage.as_ref() {
        Storage::Gpu(b) => Ok(Value {
            storage: Arc::new(b.ctx.download(b)?),
            layout: v.layout.clone(),
        }),
        _ => Ok(v.clone()),
    }
}

/// `shadergrad devices`: the cpu backend and every adapter, with what
/// matters for our kernels. `gpu:N` refers to the N-th adapter listed.
pub fn devices_report() -> String {
    let mut s = format!(
        "cpu: {} threads (rayon), f32, GEMM via the gemm crate\n",
        rayon::current_num_threads()
    );
    with_adapters(|list| {
        s += &adapters_report(list);
    });
    s
}

fn adapters_report(list: &[wgpu::Adapter]) -> String {
    let mut s = String::new();
    if list.is_empty() {
        s += &format!(
            "no GPU adapters (WGPU_BACKEND={}); `auto` uses the cpu backend\n",
            std::env::var("WGPU_BACKEND").unwrap_or_else(|_| "all".into())
        );
        return s;
    }
    let auto = list
        .iter()
        .position(|a| a.get_info().device_type != wgpu::DeviceType::Cpu);
    if auto.is_none() {
        s += "auto: the cpu backend (software adapters below are far slower; --device gpu:N selects one)\n";
    }
    for (i, a) in list.iter().enumerate() {
        let info = a.get_info();
        let l = a.limits();
        let f = a.features();
        let has = |x: wgpu::Features| if f.contains(x) { "yes" } else { "no" };
        s += &format!(
            "gpu:{i}{}: {}\n  backend {:?}, type {:?}, driver {} {}\n  max buffer {} MiB, storage binding {} MiB, {} storage buffers/stage, workgroup memory {} KiB, {} invocations/workgroup\n  f16 {}, subgroups {}, timestamps {}\n",
            if Some(i) == auto { " (auto)" } else { "" },
            info.name,
            info.backend,
            info.device_type,
            info.driver,
            info.driver_info,
            l.max_buffer_size >> 20,
            l.max_storage_buffer_binding_size >> 20,
            l.max_storage_buffers_per_shader_stage,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup,
            has(wgpu::Features::SHADER_F16),
            has(wgpu::Features::SUBGROUP),
            has(wgpu::Features::TIMESTAMP_QUERY),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    /// A kernel that does not compile is an error naming it, not an abort.
    #[test]
    fn a_kernel_that_fails_to_compile_is_named() {
        let id = match super::open(0) {
            Ok(id) => id,
            Err(e) => {
                let required = std::env::var("SHADERGRAD_REQUIRE_GPU").is_ok_and(|v| v == "1");
                assert!(!required, "SHADERGRAD_REQUIRE_GPU=1 but {e}");
                return;
            }
        };
        let ctx = super::context(id).expect("opened");
        let broken = "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }";
        let err = ctx
            .pipeline("broken.wgsl", broken, "main", &[])
            .expect_err("must not compile");
        assert!(
            err.to_string().contains("kernel broken.wgsl (entry main"),
            "{err}"
        );
        // The device is still usable afterwards.
        ctx.check_alive().expect("alive");
    }
}
