//! The backend boundary. A backend executes primitives on realized values;
//! the scheduler talks to it only through [`Session`]: open one per device
//! and realize, run nodes through it in order, finish it. `cpu` is the
//! executable specification; `gpu` runs the same ops as WGSL kernels.

pub(crate) mod cpu;
pub(crate) mod gpu;

use std::sync::Arc;

use crate::op::Op;
use crate::schedule::fusion::Program;
use crate::shape::Layout;
use crate::{DType, Device, Result};

/// The memory of one buffer: on the host, or on a GPU.
#[derive(Debug)]
pub(crate) enum Storage {
    F32(Vec<f32>),
    I32(Vec<i32>),
    Gpu(gpu::GpuBuffer),
}

impl Storage {
    pub(crate) fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::I32(_) => DType::I32,
            Storage::Gpu(b) => b.dtype,
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::I32(v) => v.len(),
            Storage::Gpu(b) => b.len,
        }
    }
}

/// A realized tensor: a shared buffer seen through a strided layout.
#[derive(Clone, Debug)]
pub(crate) struct Value {
    pub storage: Arc<Storage>,
    pub layout: Layout,
}

impl Value {
    pub(crate) fn f32(data: Vec<f32>, shape: &[usize]) -> Value {
        Value {
            storage: Arc::new(Storage::F32(data)),
            layout: Layout::contiguous(shape),
        }
    }

    pub(crate) fn i32(data: Vec<i32>, shape: &[usize]) -> Value {
        Value {
            storage: Arc::new(Storage::I32(data)),
            layout: Layout::contiguous(shape),
        }
    }

    /// A constant of `shape`: one element seen through stride 0, so a
    /// constant of any size costs one element.
    pub(crate) fn constant(v: f32, dtype: DType, shape: &[usize]) -> Value {
        let storage = match dtype {
            DType::F32 => Storage::F32(vec![v]),
            DType::I32 => Storage::I32(vec![v as i32]),
        };
        Value {
            storage: Arc::new(storage),
            layout: Layout {
                shape: shape.to_vec(),
                strides: vec![0; shape.len()],
                offset: 0,
            },
        }
    }

    /// The elements in row-major order (copies only when the layout is not dense).
    pub(crate) fn layout_gather<T: Copy + Send + Sync>(&self, data: &[T]) -> Vec<T> {
        cpu::strided_copy(data, &self.layout)
    }

    /// This value in host memory: the read-back half of the boundary
    /// (downloaded, waiting for the device, when it lives on a GPU).
    pub(crate) fn to_host(&self) -> Result<Value> {
        gpu::to_host(self)
    }

    pub(crate) fn is_on_gpu(&self) -> bool {
        matches!(self.storage.as_ref(), Storage::Gpu(_))
    }
}

/// The first element of each value as f32, with one read-back per device
/// for all of them (see `Tensor::items`), and with them the index-error
/// flags a caller deferred (an error if one is set).
pub(crate) fn first_elements(values: &[Value], index_flags: &[Value]) -> Result<Vec<f32>> {
    let mut out = vec![0.0f32; values.len()];
    // GPU words grouped by device: (output position or None for a flag
    // word, buffer, element offset).
    type Group<'a> = Vec<(Option<usize>, &'a gpu::GpuBuffer, usize)>;
    fn group_of<'a, 'b>(
        groups: &'b mut Vec<Group<'a>>,
        b: &'a gpu::GpuBuffer,
    ) -> &'b mut Group<'a> {
        match groups
            .iter()
            .position(|g| std::sync::Arc::ptr_eq(&g[0].1.ctx, &b.ctx))
        {
            Some(i) => &mut groups[i],
            None => {
                groups.push(Vec::new());
                groups.last_mut().expect("just pushed")
            }
        }
    }
    let mut by_device: Vec<Group<'_>> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let offset = v.layout.offset;
        match v.storage.as_ref() {
            Storage::F32(d) => out[i] = d[offset],
            Storage::I32(d) => out[i] = d[offset] as f32,
            Storage::Gpu(b) => group_of(&mut by_device, b).push((Some(i), b, offset)),
        }
    }
    for flag in index_flags {
        if let Storage::Gpu(b) = flag.storage.as_ref() {
            let group = group_of(&mut by_device, b);
            group.push((None, b, 0));
            group.push((None, b, 1));
        }
    }
    for group in by_device {
        let at: Vec<(&gpu::GpuBuffer, usize)> = group.iter().map(|&(_, b, o)| (b, o)).collect();
        let words = group[0].1.ctx.download_elements(&at)?;
        let mut flag_words = Vec::new();
        for (&(slot, b, _), w) in group.iter().zip(words) {
            match slot {
                Some(i) => {
                    out[i] = match b.dtype {
                        crate::DType::F32 => f32::from_bits(w),
                        crate::DType::I32 => w as i32 as f32,
                    }
                }
                None => flag_words.push(w as i32),
            }
        }
        for pair in flag_words.chunks_exact(2) {
            if let Some(e) = gpu::recorder::index_error(pair[0], pair[1]) {
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// What a backend tells the scheduler before it plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Most distinct inputs one fused elementwise kernel may read.
    pub max_fused_inputs: usize,
}

/// One realize's work on one device.
pub(crate) trait Session {
    /// Run one primitive on values of this device (or host values, which
    /// the session brings over); one value per output of `op`.
    /// `shape`/`dtype` are the node's (its first output's).
    fn exec(
        &mut self,
        op: &Op,
        inputs: &[Value],
        shape: &[usize],
        dtype: DType,
    ) -> Result<Vec<Value>>;
    /// Run a fused elementwise program over its leaves.
    fn fused(&mut self, program: &Program, leaves: &[Value], shape: &[usize]) -> Result<Value>;
    /// `op` over `axes` of a fused program's values (of `shape`), keeping
    /// the axes as size 1.
    fn fused_reduce(
        &mut self,
        program: &Program,
        leaves: &[Value],
        shape: &[usize],
        op: crate::op::ReduceOp,
        axes: &[usize],
    ) -> Result<Value>;
    /// A matmul, forward convolution or max pooling (`op` over `inputs`,
    /// its first output of `shape`) with `bias` added to each element of
    /// that output, and relu applied after when `relu`: what the fused pass
    /// `relu(output + bias)` gives, in its f32 operations, without storing
    /// the output first. `bias` holds one value per channel (the last axis
    /// of a matmul, axis 1 of a convolution or pooling) in any layout. By
    /// default, the op and then that pass.
    fn epilogue(
        &mut self,
        op: &Op,
        inputs: &[Value],
        bias: &Value,
        relu: bool,
        shape: &[usize],
    ) -> Result<Vec<Value>> {
        let mut outs = self.exec(op, inputs, shape, DType::F32)?;
        let Some(first) = outs.first().cloned() else {
            return Err(crate::Error::param(op.name(), "internal: no output"));
        };
        let mut channel = vec![1; shape.len()];
        let axis = if matches!(op, Op::MatMul) {
            shape.len() - 1
        } else {
            1
        };
        channel[axis] = shape[axis];
        let layout = bias.layout.reshape(&channel).ok_or_else(|| {
            crate::Error::param(op.name(), "internal: the bias is not one value per channel")
        })?;
        let bias = Value {
            storage: bias.storage.clone(),
            layout: layout.expand(shape),
        };
        let program = crate::schedule::fusion::bias_program(relu);
        outs[0] = self.fused(&program, &[first, bias], shape)?;
        Ok(outs)
    }
    /// A host value placed on this device.
    fn adopt(&mut self, host: Value) -> Result<Value>;
    /// Make everything recorded happen and report what the device raised
    /// meanwhile; returns the kernel dispatches it recorded (0 on the cpu).
    fn finish(self: Box<Self>) -> Result<usize>;
}

/// The limits of `device`'s backend.
pub(crate) fn limits(device: Device) -> Result<Limits> {
    match device {
        Device::Cpu => Ok(cpu::LIMITS),
        Device::Gpu(id) => gpu::limits(id),
    }
}

/// Open a session on `device`.
pub(crate) fn begin(device: Device) -> Result<Box<dyn Session>> {
    match device {
        Device::Cpu => {
            cpu::denormal::on_worker_threads();
            cpu::alloc::keep_freed_memory();
            Ok(Box::new(cpu::CpuSession))
        }
        Device::Gpu(id) => gpu::begin(id),
    }
}

/// A 32-bit integer hash with good avalanche (Wellons' lowbias32); chosen
/// because WGSL has only 32-bit integers, so both backends agree bit for bit.
#[inline(always)]
pub(crate) fn hash32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The two 32-bit keys of `Op::Rand`'s generator: element i is
/// `hash32(hash32(i + k1) ^ k2) >> 8` scaled to [0, 1).
pub(crate) fn rand_keys(seed: u64) -> (u32, u32) {
    (
        hash32(seed as u32),
        hash32((seed >> 32) as u32 ^ 0x9e37_79b9),
    )
}
