//! Shader files, typed kernel parameters and the pipeline cache.
//!
//! Every kernel takes its parameters as one uniform struct. The Rust side
//! is a `#[repr(C)]` bytemuck struct declared with [`kernel_params!`],
//! the WGSL side a struct of the same name and fields; a test compares the
//! two layouts field by field (offsets and size), so neither can drift.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::device::Context;
use super::kernels::elementwise::Signature;
use super::lock;
use crate::{Error, Result};

/// The files in `shaders/`, compiled into the binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Shader {
    Copy,
    Fill,
    Reduce,
    Gemm,
    /// gemm_subgroup.wgsl, compiled appended to gemm.wgsl.
    GemmSubgroup,
    Pool2d,
    Index,
    Optim,
    Attention,
    Texture,
    // Only the benchmark harness and the tests dispatch the probe.
    #[cfg_attr(not(any(test, feature = "bench")), allow(dead_code))]
    Probe,
}

/// `SHADERGRAD_LOOP_BOUNDING=1` keeps naga's loop bounding on every kernel
/// (to compare; see `Shader::loops_terminate`).
fn loop_bounding_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| std::env::var("SHADERGRAD_LOOP_BOUNDING").is_ok_and(|v| v == "1"))
}

impl Shader {
    /// Does every loop of this file end for any parameters the host sends?
    /// Then its module is built without naga's loop bounding, a counter
    /// and branch added to every loop iteration (GEMM's inner loops
    /// included) against infinite loops. Every loop counts toward a bound
    /// that is a constant, a rank (at most 8), or a size within a bound
    /// buffer (at most 2^30 four-byte elements: a binding holds under
    /// 4 GiB), so no step of a few hundred wraps a u32 past it. index.wgsl's
    /// scatter-add retries a compare-exchange until it wins, which ends
    /// only given the device's forward progress: it keeps the bounding.
    pub(crate) fn loops_terminate(self) -> bool {
        !matches!(self, Shader::Index)
    }

    #[cfg(test)]
    pub(crate) const ALL: [Shader; 11] = [
        Shader::Copy,
        Shader::Fill,
        Shader::Reduce,
        Shader::Gemm,
        Shader::GemmSubgroup,
        Shader::Pool2d,
        Shader::Index,
        Shader::Optim,
        Shader::Attention,
        Shader::Texture,
        Shader::Probe,
    ];

    pub(crate) fn file(self) -> &'static str {
        match self {
            Shader::Copy => "copy.wgsl",
            Shader::Fill => "fill.wgsl",
            Shader::Reduce => "reduce.wgsl",
            Shader::Gemm => "gemm.wgsl",
            Shader::GemmSubgroup => "gemm_subgroup.wgsl",
            Shader::Pool2d => "pool2d.wgsl",
            Shader::Index => "index.wgsl",
            Shader::Optim => "optim.wgsl",
            Shader::Attention => "attention.wgsl",
            Shader::Texture => "texture.wgsl",
            Shader::Probe => "probe.wgsl",
        }
    }

    /// What naga must allow beyond core WGSL to validate `source`.
    #[cfg(test)]
    pub(crate) fn capabilities(self) -> wgpu::naga::valid::Capabilities {
        use wgpu::naga::valid::Capabilities;
        match self {
            Shader::GemmSubgroup => Capabilities::SUBGROUP,
            _ => Capabilities::empty(),
        }
    }

    pub(crate) fn source(self) -> &'static str {
        match self {
            Shader::Copy => include_str!("../../../shaders/copy.wgsl"),
            Shader::Fill => include_str!("../../../shaders/fill.wgsl"),
            Shader::Reduce => include_str!("../../../shaders/reduce.wgsl"),
            Shader::Gemm => include_str!("../../../shaders/gemm.wgsl"),
            // It extends gemm.wgsl (its readers and bindings); a file of
            // its own because only devices with subgroups can compile it.
            Shader::GemmSubgroup => concat!(
                include_str!("../../../shaders/gemm.wgsl"),
                include_str!("../../../shaders/gemm_subgroup.wgsl")
            ),
            Shader::Pool2d => include_str!("../../../shaders/pool2d.wgsl"),
            Shader::Index => include_str!("../../../shaders/index.wgsl"),
            Shader::Optim => include_str!("../../../shaders/optim.wgsl"),
            Shader::Attention => include_str!("../../../shaders/attention.wgsl"),
            Shader::Texture => include_str!("../../../shaders/texture.wgsl"),
            Shader::Probe => include_str!("../../../shaders/probe.wgsl"),
        }
    }
}

/// A kernel's uniform parameters: plain old data with the layout of the
/// WGSL struct named `WGSL_STRUCT`.
// The names and offsets are read by the layout test.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) trait KernelParams: bytemuck::Pod {
    const WGSL_STRUCT: &'static str;
    /// (field, byte offset) in declaration order.
    fn fields() -> Vec<(&'static str, usize)>;
}

/// `vec4<u32>` in a uniform struct: four words, aligned to 16 bytes.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct UVec4(pub [u32; 4]);

/// Eight words as WGSL's `array<vec4<u32>, 2>` (a uniform array's stride
/// is 16 bytes, so shapes and strides travel as two vectors).
pub(crate) type U8x = [UVec4; 2];

/// `v` as eight words, zeros after its end; None when it has more.
pub(crate) fn words8(v: &[usize]) -> Option<U8x> {
    if v.len() > 8 {
        return None;
    }
    let mut out = [UVec4::default(); 2];
    for (i, &x) in v.iter().enumerate() {
        out[i / 4].0[i % 4] = u32::try_from(x).ok()?;
    }
    Some(out)
}

/// Declare a kernel's parameter struct (see the module doc).
macro_rules! kernel_params {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub(crate) struct $name {
            $($(#[$fmeta])* pub $field: $ty),*
        }
        impl $crate::backend::gpu::pipeline::KernelParams for $name {
            const WGSL_STRUCT: &'static str = stringify!($name);
            fn fields() -> Vec<(&'static str, usize)> {
                vec![$((stringify!($field), std::mem::offset_of!($name, $field))),*]
            }
        }
    };
}
pub(crate) use kernel_params;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    File {
        shader: Shader,
        entry: &'static str,
        /// (name, value bits) of the override constants.
        constants: Vec<(&'static str, u64)>,
    },
    /// A kernel by its text (the compile-error test's).
    #[cfg(test)]
    Generated(String),
    /// A fused elementwise kernel, by what its text depends on.
    Fused(Signature),
}

/// A compute pipeline and its bind group layout, fetched once (asking the
/// pipeline for it on every dispatch costs a lookup inside wgpu).
#[derive(Debug)]
pub(crate) struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
}

/// Pipelines and shader modules of one device.
#[derive(Default)]
pub(crate) struct Cache {
    pipelines: Mutex<HashMap<Key, Arc<Pipeline>>>,
    modules: Mutex<HashMap<Key, wgpu::ShaderModule>>,
}

impl Context {
    /// The pipeline for `entry` of a shader file, specialised by `constants`.
    pub(crate) fn pipeline(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<Pipeline>> {
        let key = Key::File {
            shader,
            entry,
            constants: constants.iter().map(|(k, v)| (*k, v.to_bits())).collect(),
        };
        let module_key = Key::File {
            shader,
            entry: "",
            constants: vec![],
        };
        self.build(
            key,
            module_key,
            shader.file(),
            shader.source(),
            entry,
            constants,
        )
    }

    /// The pipeline of a kernel's text (entry `main`).
    #[cfg(test)]
    pub(crate) fn generated_pipeline(&self, label: &str, source: &str) -> Result<Arc<Pipeline>> {
        let key = Key::Generated(source.to_string());
        if let Some(p) = lock(&self.pipelines.pipelines).get(&key) {
            return Ok(p.clone());
        }
        self.build(key.clone(), key, label, source, "main", &[])
    }

    /// The pipeline of a fused elementwise kernel: its text is emitted only
    /// the first time its signature is seen.
    pub(crate) fn fused_pipeline(&self, signature: &Signature) -> Result<Arc<Pipeline>> {
        let key = Key::Fused(signature.clone());
        if let Some(p) = lock(&self.pipelines.pipelines).get(&key) {
            return Ok(p.clone());
        }
        let source = signature.source();
        // Debug builds (the tests) run naga's validator on every emitted
        // kernel themselves, so an emitter bug names the source.
        #[cfg(debug_assertions)]
        validate_wgsl("fused elementwise", &source, Default::default())?;
        self.build(key.clone(), key, "fused elementwise", &source, "main", &[])
    }

    fn build(
        &self,
        key: Key,
        module_key: Key,
        name: &str,
        source: &str,
        entry: &str,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<Pipeline>> {
        if let Some(p) = lock(&self.pipelines.pipelines).get(&key) {
            return Ok(p.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let trusted = match &module_key {
            Key::File { shader, .. } => shader.loops_terminate(),
            Key::Fused(_) => true,
            #[cfg(test)]
            Key::Generated(_) => false,
        } && !loop_bounding_forced();
        let module = lock(&self.pipelines.modules)
            .entry(module_key.clone())
            .or_insert_with(|| {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(name),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                };
                if trusted {
                    let checks = wgpu::ShaderRuntimeChecks {
                        force_loop_bounding: false,
                        ..wgpu::ShaderRuntimeChecks::checked()
                    };
                    // SAFETY: `loops_terminate` lists the files whose every
                    // loop ends (see there), and the emitter's only loop
                    // counts down a rank of at most 8. Bounds checks stay on.
                    unsafe { self.device.create_shader_module_trusted(desc, checks) }
                } else {
                    self.device.create_shader_module(desc)
                }
            })
            .clone();
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
            lock(&self.pipelines.modules).remove(&module_key);
            return Err(Error::Device(format!(
                "kernel {name} (entry {entry}, constants {constants:?}) failed to compile on {}: {e}",
                self.name
            )));
        }
        let layout = pipeline.get_bind_group_layout(0);
        let p = Arc::new(Pipeline { pipeline, layout });
        lock(&self.pipelines.pipelines).insert(key, p.clone());
        Ok(p)
    }
}

/// Parse and validate WGSL with naga, as wgpu does before compiling it.
#[cfg(any(debug_assertions, test))]
pub(crate) fn validate_wgsl(
    name: &str,
    source: &str,
    capabilities: wgpu::naga::valid::Capabilities,
) -> Result<wgpu::naga::Module> {
    use wgpu::naga;
    let module = naga::front::wgsl::parse_str(source).map_err(|e| {
        Error::Device(format!(
            "kernel {name} does not parse:\n{}",
            e.emit_to_string(source)
        ))
    })?;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities)
        .validate(&module)
        .map_err(|e| {
            Error::Device(format!(
                "kernel {name} does not validate:\n{}",
                e.emit_to_string(source)
            ))
        })?;
    Ok(module)
}

/// Does the WGSL struct `P::WGSL_STRUCT` in `source` have `P`'s layout?
/// Returns what differs.
#[cfg(test)]
pub(crate) fn layout_mismatch<P: KernelParams>(source: &str) -> Option<String> {
    use wgpu::naga;
    let module = match naga::front::wgsl::parse_str(source) {
        Ok(m) => m,
        Err(e) => return Some(format!("does not parse: {e}")),
    };
    let Some((_, ty)) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(P::WGSL_STRUCT))
    else {
        return Some(format!("no struct {}", P::WGSL_STRUCT));
    };
    let naga::TypeInner::Struct { members, span } = &ty.inner else {
        return Some(format!("{} is not a struct", P::WGSL_STRUCT));
    };
    let wgsl: Vec<(String, usize)> = members
        .iter()
        .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
        .collect();
    let rust: Vec<(String, usize)> = P::fields()
        .into_iter()
        .map(|(n, o)| (n.to_string(), o))
        .collect();
    let size = std::mem::size_of::<P>();
    if wgsl != rust || *span as usize != size {
        return Some(format!(
            "{}: WGSL fields {wgsl:?} ({span} bytes) vs Rust {rust:?} ({size} bytes)",
            P::WGSL_STRUCT
        ));
    }
    None
}
