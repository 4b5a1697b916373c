//! Where a tensor's graph runs: the cpu backend or one opened GPU.
//!
//! Rules (enforced by the ops and the scheduler):
//! - a leaf (data, constant, random) is placed on the thread's default
//!   device (`with_device`), every other node on its inputs' device;
//! - an op whose inputs live on two devices is an error that says to move
//!   one with [`Tensor::to`](crate::Tensor::to);
//! - a gradient lives on its tensor's device, wherever `backward` is called;
//! - GPUs are named `gpu:N`, N being the adapter's place in `shadergrad
//!   devices`, in the API, the CLI and every message; a device an
//!   application registered with [`Device::from_wgpu`] is `gpu:appK`.

use std::fmt;

use crate::backend::gpu;
use crate::{Error, Result};

/// A backend and, for GPUs, which opened device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// The pure-Rust backend: the executable specification, multi-threaded.
    Cpu,
    /// An opened wgpu device (`Device::gpu`, `Device::parse`, `Device::from_wgpu`).
    Gpu(GpuId),
}

/// An opened GPU device of this process. Its name (`gpu:N`) is what
/// `Display` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GpuId(pub(crate) u32);

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Gpu(id) => f.write_str(&gpu::device::name(*id)),
        }
    }
}

impl Device {
    /// Adapter `ordinal` in the order `shadergrad devices` lists them (best
    /// first), opened once per process with the adapter's own limits. Its
    /// name is `gpu:{ordinal}`.
    pub fn gpu(ordinal: usize) -> Result<Device> {
        gpu::device::open(ordinal).map(Device::Gpu)
    }

    /// Cap the bytes of buffers this GPU's pool may hold (`None`: no cap).
    /// An allocation past the cap first releases the pool's free buffers,
    /// then fails with [`Error::OutOfMemory`](crate::Error::OutOfMemory),
    /// after which smaller work (a smaller batch) can continue in the same
    /// process. `SHADERGRAD_GPU_MEMORY_LIMIT` (`512MiB`, `2GB`) sets it when
    /// the device opens. The cpu backend has no cap: an error.
    ///
    /// ```
    /// # fn main() -> shadergrad::Result<()> {
    /// use shadergrad::Device;
    /// if let Ok(gpu) = Device::gpu(0) {
    ///     gpu.set_memory_limit(Some(256 << 20))?;
    ///     gpu.set_memory_limit(None)?;
    /// }
    /// assert!(Device::Cpu.set_memory_limit(Some(1 << 20)).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_memory_limit(&self, bytes: Option<u64>) -> Result<()> {
        match self {
            Device::Cpu => Err(crate::Error::param(
                "set_memory_limit",
                "the cpu backend allocates from the system and has no memory limit; set one on a gpu device",
            )),
            Device::Gpu(id) => {
                gpu::device::context(*id)?
                    .memory_limit
                    .store(bytes.unwrap_or(u64::MAX), std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Bytes of buffers this GPU's pool holds (in use or free); 0 on the cpu.
    pub fn memory_allocated(&self) -> u64 {
        match self {
            Device::Cpu => 0,
            Device::Gpu(id) => gpu::device::context(*id)
                .map(|c| c.allocated.load(std::sync::atomic::Ordering::Relaxed))
                .unwrap_or(0),
        }
    }

    /// The best hardware adapter (discrete, integrated, virtual), else the
    /// cpu backend. Software rasterisers (llvmpipe, SwiftShader, WARP) run
    /// our kernels about a hundred times slower than the cpu backend does,
    /// so `auto` skips them; `gpu` or `gpu:N` still selects one.
    pub fn auto() -> Device {
        let best = gpu::device::with_adapters(|list| {
            list.iter()
                .position(|a| a.get_info().device_type != wgpu::DeviceType::Cpu)
        });
        match best {
            Some(i) => Device::gpu(i).unwrap_or(Device::Cpu),
            None => Device::Cpu,
        }
    }

    /// `auto`, `cpu`, `gpu` (the first adapter), `gpu:N`, or `gpu:appK` (a
    /// device the application registered).
    pub fn parse(s: &str) -> Result<Device> {
        let s = s.trim();
        match s {
            "cpu" => return Ok(Device::Cpu),
            "auto" => return Ok(Device::auto()),
            "gpu" => return Device::gpu(0),
            _ => {}
        }
        if let Some(id) = s
            .starts_with("gpu:app")
            .then(|| gpu::device::find(s))
            .flatten()
        {
            return Ok(Device::Gpu(id));
        }
        match s.strip_prefix("gpu:").map(str::parse::<usize>) {
            Some(Ok(n)) => Device::gpu(n),
            _ => Err(Error::param(
                "device",
                format!(
                    "unknown device {s:?}; use auto, gpu, gpu:N (see `shadergrad devices`) or cpu"
                ),
            )),
        }
    }

    /// Run on a device the application already owns: tensors live in its
    /// memory and kernels run on its queue, between the app's own work (the
    /// rules: [`crate::embed`]). The device is named `gpu:appK`, K counting
    /// such devices from 0. Register a device once and keep the `Device`
    /// (Copy): each call makes a new registration with its own buffer pool.
    /// (wgpu compares devices by an id that is only unique within one
    /// `wgpu::Instance`, so we cannot tell a repeat reliably.) A device whose limits fall short of
    /// [`crate::embed::required_limits`] is refused with each shortfall named.
    pub fn from_wgpu(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
    ) -> Result<Device> {
        let missing = crate::embed::missing_limits(&device.limits());
        if !missing.is_empty() {
            return Err(Error::Device(format!(
                "the application's device ({}) lacks what shadergrad's kernels need: {}; request \
                 shadergrad::embed::required_limits() (or adapter.limits()) as \
                 DeviceDescriptor::required_limits",
                info.name,
                missing.join("; ")
            )));
        }
        Ok(Device::Gpu(gpu::device::register(
            device, queue, info, None,
        )))
    }

    /// The name and the adapter behind it: `gpu:0 (llvmpipe · Vulkan · Cpu)`.
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Gpu(id) => match gpu::device::context(*id) {
                Ok(ctx) => format!("{self} ({})", gpu::device::describe_info(&ctx.info)),
                Err(_) => format!("{self} (not opened)"),
            },
        }
    }

    /// Whether this is a GPU.
    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
    }
}

/// Every device shadergrad can run on, with what matters for its kernels
/// (what `shadergrad devices` prints).
pub fn devices_report() -> String {
    gpu::device::devices_report()
}
