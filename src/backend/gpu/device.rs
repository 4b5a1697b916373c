//! The device registry: adapters wgpu finds, the devices we open on them
//! (or an application gives us), and what each one can do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::lock;
use crate::device::GpuId;
use crate::{Error, Result};

/// One opened device (an adapter's, or one the embedding application gave us).
pub(crate) struct Context {
    pub id: GpuId,
    /// `gpu:N` or `gpu:appK`.
    pub name: String,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// Whether gemm_subgroup.wgsl runs here (asked once: every GEMM plan reads it).
    subgroup_gemm: bool,
    /// Pipelines and modules by kernel (see `pipeline.rs`).
    pub(super) pipelines: super::pipeline::Cache,
    /// Free buffers by size class (bytes), each with the `submits` count
    /// when it came back (see `Context::trim_pool`).
    pub(super) pool: Mutex<HashMap<u64, Vec<(wgpu::Buffer, u64)>>>,
    /// Recordings submitted so far: the pool's clock.
    pub(super) submits: std::sync::atomic::AtomicU64,
    /// Parameter buffers free for the next recording (see
    /// `Recorder::uniform_slot`), and read-back staging buffers by size.
    pub(super) uniform_buffers: Mutex<Vec<wgpu::Buffer>>,
    pub(super) staging: Mutex<Vec<wgpu::Buffer>>,
    /// Small `arange` results by (start, step, length, type).
    pub(crate) aranges: Mutex<HashMap<(u64, u64, usize, crate::DType), crate::backend::Value>>,
    /// Convolution offset tables by mode and geometry (see gemm.wgsl).
    pub(super) conv_tables: Mutex<HashMap<Vec<u32>, crate::backend::Value>>,
    /// One-element buffers of constants by (bits, type): `full` nodes are
    /// in every step's graph and would otherwise upload each time.
    pub(super) constants: Mutex<HashMap<(u32, crate::DType), crate::backend::Value>>,
    /// Bind groups by what they bind (see `Recorder::bind_group`).
    pub(super) bind_groups: Mutex<HashMap<super::recorder::BindKey, wgpu::BindGroup>>,
    /// texture.wgsl's read pipeline and its explicit layout (see kernels/texture.rs).
    pub(super) texture_read: Mutex<Option<(wgpu::BindGroupLayout, wgpu::ComputePipeline)>>,
    /// Bytes of buffers the pool has created and not yet released (in use
    /// or free in the pool).
    pub(crate) allocated: std::sync::atomic::AtomicU64,
    /// At most this many bytes in `allocated` (`u64::MAX`: no cap). From
    /// `SHADERGRAD_GPU_MEMORY_LIMIT`, or [`crate::Device::set_memory_limit`].
    pub(crate) memory_limit: std::sync::atomic::AtomicU64,
    /// Set by the device-lost callback.
    lost: Arc<Mutex<Option<String>>>,
    /// Errors wgpu reported outside any error scope (it would panic otherwise).
    uncaptured: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, describe_info(&self.info))
    }
}

/// "llvmpipe (LLVM 15.0.6, 256 bits) · Vulkan · Cpu"
pub(crate) fn describe_info(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} · {:?} · {:?}",
        info.name, info.backend, info.device_type
    )
}

/// Whether gemm_subgroup.wgsl runs on a device: it has subgroups, each of
/// at least the 8 invocations its chunk of K is spread over, and at most
/// its workgroup's 64 (sizes are powers of two, so 64 is a multiple: no
/// subgroup is cut short).
fn runs_subgroup_gemm(features: wgpu::Features, info: &wgpu::AdapterInfo) -> bool {
    features.contains(wgpu::Features::SUBGROUP)
        && info.subgroup_min_size >= 8
        && (1..=64).contains(&info.subgroup_max_size)
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

pub(crate) fn gl_turn(backend: wgpu::Backend) -> Option<GlTurnGuard> {
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
/// Registry id of each adapter ordinal that has been opened.
static OPENED: Mutex<Vec<(usize, GpuId)>> = Mutex::new(Vec::new());

/// The context behind `Device::Gpu(id)`.
pub(crate) fn context(id: GpuId) -> Result<Arc<Context>> {
    lock(&REGISTRY).get(id.0 as usize).cloned().ok_or_else(|| {
        Error::param(
            "device",
            format!("gpu device #{} was never opened; get devices from Device::gpu or Device::from_wgpu", id.0),
        )
    })
}

/// The name of an opened device (`gpu:N`, `gpu:appK`).
pub(crate) fn name(id: GpuId) -> String {
    context(id).map_or_else(|_| format!("gpu#{}", id.0), |c| c.name.clone())
}

/// The opened device called `name`.
pub(crate) fn find(name: &str) -> Option<GpuId> {
    lock(&REGISTRY)
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.id)
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
pub(crate) fn with_adapters<R>(f: impl FnOnce(&[wgpu::Adapter]) -> R) -> R {
    let _turn = gl_turn(gl_possible());
    let list = adapters_unguarded(wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all()));
    f(&list)
}

fn adapters_unguarded(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
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

/// Open adapter `ordinal` of `with_adapters`' list (once; later calls
/// share it) and return its id.
pub(crate) fn open(ordinal: usize) -> Result<GpuId> {
    let mut opened = lock(&OPENED);
    if let Some(&(_, id)) = opened.iter().find(|(o, _)| *o == ordinal) {
        return Ok(id);
    }
    let id = with_adapters(|list| open_adapter(list, ordinal))?;
    opened.push((ordinal, id));
    Ok(id)
}

fn open_adapter(list: &[wgpu::Adapter], ordinal: usize) -> Result<GpuId> {
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
            "could not open gpu:{ordinal} ({}): {e}; try another adapter (`shadergrad devices`) or --device cpu",
            describe_info(&info)
        ))
    })?;
    Ok(register(device, queue, info, Some(ordinal)))
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

/// Adopt a device: ours from `open` (adapter `ordinal`), or an embedding
/// application's (`None`).
pub(crate) fn register(
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    ordinal: Option<usize>,
) -> GpuId {
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
    let mut reg = lock(&REGISTRY);
    let id = GpuId(reg.len() as u32);
    let name = match ordinal {
        Some(n) => format!("gpu:{n}"),
        None => format!(
            "gpu:app{}",
            reg.iter().filter(|c| c.name.starts_with("gpu:app")).count()
        ),
    };
    reg.push(Arc::new(Context {
        id,
        name,
        limits: device.limits(),
        subgroup_gemm: runs_subgroup_gemm(device.features(), &info),
        device,
        queue,
        info,
        pipelines: Default::default(),
        pool: Mutex::new(HashMap::new()),
        submits: Default::default(),
        uniform_buffers: Mutex::new(Vec::new()),
        staging: Mutex::new(Vec::new()),
        aranges: Mutex::new(HashMap::new()),
        conv_tables: Mutex::new(HashMap::new()),
        constants: Mutex::new(HashMap::new()),
        bind_groups: Mutex::new(HashMap::new()),
        texture_read: Mutex::new(None),
        allocated: Default::default(),
        memory_limit: std::sync::atomic::AtomicU64::new(memory_limit_from_env()),
        lost,
        uncaptured,
    }));
    id
}

/// `SHADERGRAD_GPU_MEMORY_LIMIT` in bytes (`512MiB`, `2GB`, `1048576`);
/// unset or unreadable: no cap (an unreadable value is reported once).
fn memory_limit_from_env() -> u64 {
    let Ok(text) = std::env::var("SHADERGRAD_GPU_MEMORY_LIMIT") else {
        return u64::MAX;
    };
    parse_bytes(&text).unwrap_or_else(|| {
        eprintln!(
            "warning: SHADERGRAD_GPU_MEMORY_LIMIT={text:?} is not a size (try 512MiB, 2GB or a \
             byte count); no limit is set"
        );
        u64::MAX
    })
}

/// `512MiB`, `2GB`, `1.5G`, `1048576` as bytes (K/M/G/T: powers of 1024).
pub(crate) fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().ok()?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    let bytes = num * scale as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

impl Context {
    /// Whether gemm_subgroup.wgsl runs here (see `runs_subgroup_gemm`).
    pub(crate) fn subgroup_gemm(&self) -> bool {
        self.subgroup_gemm
    }

    /// Fail early once the device is gone, instead of queueing into the void.
    pub(crate) fn check_alive(&self) -> Result<()> {
        // wgpu runs the device-lost callback when the device is polled; a
        // non-blocking poll lets a loss since the last submit show here.
        let _ = self.device.poll(wgpu::PollType::Poll);
        if let Some(why) = lock(&self.lost).as_ref() {
            return Err(Error::Device(format!(
                "the GPU device {} ({}) was lost ({why}); its tensors are gone. Save work from \
                 checkpoints and restart, or use --device cpu",
                self.name, self.info.name
            )));
        }
        let mut errs = lock(&self.uncaptured);
        if !errs.is_empty() {
            let msg = errs.join("; ");
            errs.clear();
            return Err(Error::Device(format!(
                "wgpu reported on {}: {msg}",
                self.name
            )));
        }
        Ok(())
    }

    /// `e`, unless the device was lost meanwhile: then that, which is what
    /// the user must act on (a failed mapping after a driver reset says
    /// only "invalid buffer").
    pub(crate) fn lost_or(&self, e: Error) -> Error {
        match self.check_alive() {
            Err(lost @ Error::Device(_)) if lock(&self.lost).is_some() => lost,
            _ => e,
        }
    }

    /// Block until the queue is idle.
    pub(crate) fn wait(&self) -> Result<()> {
        crate::schedule::count_wait();
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .map_err(|e| Error::Device(format!("waiting for {} failed: {e}", self.name)))?;
        self.check_alive()
    }
}

/// `shadergrad devices`: the cpu backend and every adapter, with what
/// matters for our kernels. `gpu:N` refers to the N-th adapter listed. A
/// graphics API that offers no adapter is named with the likely reason.
pub(crate) fn devices_report() -> String {
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
    let allowed = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    let apis = [
        (wgpu::Backends::VULKAN, wgpu::Backend::Vulkan, "Vulkan", "install a Vulkan driver (`apt-get install mesa-vulkan-drivers libvulkan1` gives a software one)"),
        (wgpu::Backends::METAL, wgpu::Backend::Metal, "Metal", "Metal exists on Apple platforms only"),
        (wgpu::Backends::DX12, wgpu::Backend::Dx12, "DX12", "DX12 exists on Windows only"),
        (wgpu::Backends::GL, wgpu::Backend::Gl, "GL", "install EGL and a GL driver (`apt-get install libegl1 libgl1-mesa-dri`)"),
    ];
    let on_this_platform = |b: wgpu::Backend| match b {
        wgpu::Backend::Metal => cfg!(target_vendor = "apple"),
        wgpu::Backend::Dx12 => cfg!(windows),
        _ => !cfg!(target_vendor = "apple"),
    };
    for (flag, backend, api, why) in apis {
        if !on_this_platform(backend) {
            continue;
        }
        if !allowed.contains(flag) {
            s += &format!("{api}: not probed (WGPU_BACKEND excludes it)\n");
        } else if !list.iter().any(|a| a.get_info().backend == backend) {
            s += &format!("{api}: no adapter; {why}\n");
        }
    }
    if list.is_empty() {
        s += "no GPU adapters: `auto` uses the cpu backend\n";
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
        let subgroups = if f.contains(wgpu::Features::SUBGROUP) {
            format!(
                "yes ({}..{} invocations)",
                info.subgroup_min_size, info.subgroup_max_size
            )
        } else {
            "no".to_string()
        };
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
            subgroups,
            has(wgpu::Features::TIMESTAMP_QUERY),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn memory_limit_sizes() {
        assert_eq!(parse_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes(" 2GB "), Some(2 << 30));
        assert_eq!(parse_bytes("1.5g"), Some(3 << 29));
        assert_eq!(parse_bytes("64k"), Some(64 << 10));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("12 parsecs"), None);
        assert_eq!(parse_bytes("-1"), None);
    }
}
